//! Session ticket keys: random, held in memory only (never written anywhere;
//! wiped when replaced, as far as Rust lets a value be), and rotated on a fixed schedule.
//!
//! **Schedule.** Time is cut into periods of `rotation` seconds (one hour by
//! default, `[terminator] ticket_key_rotation_secs`), counted from the epoch.
//! The first handshake of a period makes that period's key: 16 random bytes
//! of name, a random AES-256-CBC key and a random HMAC-SHA256 key. New tickets
//! are sealed with the current period's key; tickets sealed with the key of
//! the current period or of the [`ACCEPTED_PERIODS`]` - 1` periods before it
//! are opened (a ticket from an older one is renewed with a fresh ticket);
//! any other ticket (older keys, another process's, a forged one) is ignored,
//! and the handshake falls back to a full one. Older keys are dropped. So a
//! ticket is usable for at most `ACCEPTED_PERIODS` periods, and a stolen key
//! opens at most that much traffic's worth of tickets.
//!
//! The keys are per process: a restart, or another node of a fleet, does not
//! open this process's tickets (fleet-wide keys are not done yet).

use std::sync::RwLock;

use boring::{
    hash::MessageDigest,
    hmac::HmacCtxRef,
    ssl::{SslRef, TicketKeyCallbackResult},
    symm::{Cipher, CipherCtxRef},
};

/// How many periods' keys open tickets: the current one and the two before it.
pub const ACCEPTED_PERIODS: i64 = 3;

/// One period's key.
struct TicketKey {
    period: i64,
    name: [u8; 16],
    aes: [u8; 32],
    hmac: [u8; 32],
}

impl TicketKey {
    fn random(period: i64) -> Result<TicketKey, boring::error::ErrorStack> {
        let mut key = TicketKey {
            period,
            name: [0; 16],
            aes: [0; 32],
            hmac: [0; 32],
        };
        boring::rand::rand_bytes(&mut key.name)?;
        boring::rand::rand_bytes(&mut key.aes)?;
        boring::rand::rand_bytes(&mut key.hmac)?;
        Ok(key)
    }
}

impl Drop for TicketKey {
    fn drop(&mut self) {
        for byte in self
            .name
            .iter_mut()
            .chain(&mut self.aes)
            .chain(&mut self.hmac)
        {
            // SAFETY: a valid, aligned byte of this key; volatile so the wipe is kept.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// The ticket keys of one acceptor: period `p`'s key lives in slot
/// `p mod ACCEPTED_PERIODS`, and is wiped when the key of `p + 3` replaces it
/// (keys are never moved, so no stray copy is left in the heap).
pub struct TicketKeys {
    rotation: i64,
    clock: fn() -> i64,
    slots: RwLock<[Option<TicketKey>; ACCEPTED_PERIODS as usize]>,
}

/// Which key opened a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The current period's.
    Current,
    /// An earlier period's, still accepted: the ticket should be renewed.
    Earlier,
}

impl TicketKeys {
    /// Keys rotated every `rotation_secs` (at least 1) by the wall clock.
    pub fn new(rotation_secs: u64) -> TicketKeys {
        TicketKeys::with_clock(rotation_secs, crate::clock::now)
    }

    /// Keys rotated by `clock` (Unix seconds): for tests.
    pub fn with_clock(rotation_secs: u64, clock: fn() -> i64) -> TicketKeys {
        TicketKeys {
            rotation: i64::try_from(rotation_secs.max(1)).unwrap_or(i64::MAX),
            clock,
            slots: RwLock::new(std::array::from_fn(|_| None)),
        }
    }

    fn period(&self) -> i64 {
        (self.clock)().div_euclid(self.rotation)
    }

    /// The slot of a period's key.
    fn slot(period: i64) -> usize {
        period.rem_euclid(ACCEPTED_PERIODS) as usize
    }

    /// Runs `f` on the current period's key, making it (in place of the key
    /// no longer accepted) on the period's first use. `None`: no random bytes.
    fn with_current<R>(&self, f: impl FnOnce(&TicketKey) -> R) -> Option<R> {
        let period = self.period();
        let slot = Self::slot(period);
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            if let Some(key) = slots[slot].as_ref().filter(|k| k.period == period) {
                return Some(f(key));
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if slots[slot].as_ref().is_none_or(|k| k.period != period) {
            slots[slot] = Some(TicketKey::random(period).ok()?);
        }
        slots[slot].as_ref().map(f)
    }

    /// Runs `f` on the accepted key named `name`, if there is one.
    fn with_named<R>(&self, name: &[u8; 16], f: impl FnOnce(&TicketKey) -> R) -> Option<R> {
        let period = self.period();
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .flatten()
            .filter(|k| k.period > period - ACCEPTED_PERIODS && k.period <= period)
            .find(|k| same(&k.name, name))
            .map(f)
    }

    /// Sets up a new ticket's encryption with the current key: its name and a
    /// random IV go in `name` and `iv`. `false`: no ticket can be made now.
    pub fn seal(
        &self,
        name: &mut [u8; 16],
        iv: &mut [u8; 16],
        cipher: &mut CipherCtxRef,
        hmac: &mut HmacCtxRef,
    ) -> bool {
        if boring::rand::rand_bytes(iv).is_err() {
            return false;
        }
        self.with_current(|key| {
            name.copy_from_slice(&key.name);
            cipher
                .init_encrypt(&Cipher::aes_256_cbc(), &key.aes, iv)
                .and_then(|()| hmac.init(&key.hmac, &MessageDigest::sha256()))
                .is_ok()
        })
        .unwrap_or(false)
    }

    /// Sets up a ticket's decryption with the key it names, if that key is
    /// still accepted.
    pub fn open(
        &self,
        name: &[u8; 16],
        iv: &[u8; 16],
        cipher: &mut CipherCtxRef,
        hmac: &mut HmacCtxRef,
    ) -> Option<Opened> {
        let period = self.period();
        self.with_named(name, |key| {
            let ready = cipher
                .init_decrypt(&Cipher::aes_256_cbc(), &key.aes, iv)
                .and_then(|()| hmac.init(&key.hmac, &MessageDigest::sha256()));
            ready.ok().map(|()| match key.period == period {
                true => Opened::Current,
                false => Opened::Earlier,
            })
        })
        .flatten()
    }

    /// The BoringSSL ticket key callback over these keys. A ticket whose key
    /// is unknown (or a failure) is never an error: no ticket is issued, or
    /// the ticket is ignored and the handshake is a full one. `unknown` is
    /// told of each ticket ignored for its key.
    pub fn callback(
        self: std::sync::Arc<Self>,
        unknown: fn(&SslRef),
    ) -> impl Fn(
        &SslRef,
        &mut [u8; 16],
        &mut [u8; 16],
        &mut CipherCtxRef,
        &mut HmacCtxRef,
        bool,
    ) -> TicketKeyCallbackResult
    + Send
    + Sync
    + 'static {
        move |ssl, name, iv, cipher, hmac, encrypt| {
            if encrypt {
                return match self.seal(name, iv, cipher, hmac) {
                    true => TicketKeyCallbackResult::Success,
                    false => TicketKeyCallbackResult::Noop,
                };
            }
            match self.open(name, iv, cipher, hmac) {
                Some(Opened::Current) => TicketKeyCallbackResult::Success,
                Some(Opened::Earlier) => TicketKeyCallbackResult::DecryptSuccessRenew,
                None => {
                    unknown(ssl);
                    TicketKeyCallbackResult::Noop
                }
            }
        }
    }
}

/// Compares two key names in constant time.
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use boring::{hmac::HmacCtx, symm::CipherCtx};
    use foreign_types::ForeignType;

    use super::*;

    static NOW: AtomicI64 = AtomicI64::new(0);

    fn now() -> i64 {
        NOW.load(Ordering::SeqCst)
    }

    fn contexts() -> (CipherCtx, HmacCtx) {
        // SAFETY: fresh contexts (checked non-null), owned by the wrappers that free them.
        unsafe {
            let (c, h) = (boring_sys::EVP_CIPHER_CTX_new(), boring_sys::HMAC_CTX_new());
            assert!(!c.is_null() && !h.is_null());
            (CipherCtx::from_ptr(c), HmacCtx::from_ptr(h))
        }
    }

    fn seal(keys: &TicketKeys) -> [u8; 16] {
        let (mut name, mut iv) = ([0; 16], [0; 16]);
        let (mut cipher, mut hmac) = contexts();
        assert!(keys.seal(&mut name, &mut iv, &mut cipher, &mut hmac));
        name
    }

    fn open(keys: &TicketKeys, name: &[u8; 16]) -> Option<Opened> {
        let (mut cipher, mut hmac) = contexts();
        keys.open(name, &[0; 16], &mut cipher, &mut hmac)
    }

    #[test]
    fn keys_rotate_each_period_and_three_periods_are_accepted() {
        NOW.store(3600 * 1000, Ordering::SeqCst);
        let keys = TicketKeys::with_clock(3600, now);
        let first = seal(&keys);
        assert_eq!(seal(&keys), first, "one key per period");
        assert_eq!(open(&keys, &first), Some(Opened::Current));
        NOW.fetch_add(3600, Ordering::SeqCst);
        let second = seal(&keys);
        assert_ne!(second, first, "a new key each period");
        assert_eq!(open(&keys, &first), Some(Opened::Earlier));
        NOW.fetch_add(3600, Ordering::SeqCst);
        seal(&keys);
        assert_eq!(
            open(&keys, &first),
            Some(Opened::Earlier),
            "two periods back"
        );
        NOW.fetch_add(3600, Ordering::SeqCst);
        assert_eq!(open(&keys, &first), None, "three periods back: refused");
        assert_eq!(open(&keys, &second), Some(Opened::Earlier));
        seal(&keys);
        let slots = keys.slots.read().unwrap();
        assert!(
            slots.iter().flatten().all(|k| k.name != first),
            "the first key was replaced"
        );
        drop(slots);
        assert_eq!(open(&keys, &[7; 16]), None, "an unknown name");
    }
}
