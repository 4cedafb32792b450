//! The one lock the program takes: a word in a map value, acquired with the
//! BPF compare-and-swap instruction and released with an atomic exchange.
//!
//! The BPF target tells Rust it has no compare-and-swap (and is single-threaded),
//! so `core::sync::atomic` would compile to plain loads and stores; the
//! instructions are written out instead. Nobody ever waits: a CPU that finds the
//! word taken gives up on its segment, which then passes (fail open).

/// Takes `lock` (0 → 1). `false` if another CPU holds it.
#[inline(always)]
pub(crate) fn try_lock(lock: *mut u64) -> bool {
    let mut old: u64 = 0;
    // SAFETY: `lock` points at a u64 in a map value; BPF_CMPXCHG compares r0
    // with it and stores the new value if equal, leaving the old value in r0.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({ptr} + 0, r0, {new})",
            ptr = in(reg) lock,
            new = in(reg) 1u64,
            inout("r0") old,
        );
    }
    old == 0
}

/// Releases `lock`; the exchange orders every earlier store before it.
#[inline(always)]
pub(crate) fn unlock(lock: *mut u64) {
    let mut zero: u64 = 0;
    // SAFETY: `lock` points at a u64 in a map value; BPF_XCHG stores atomically.
    unsafe {
        core::arch::asm!(
            "{v} = xchg_64({ptr} + 0, {v})",
            ptr = in(reg) lock,
            v = inout(reg) zero,
        );
    }
    let _ = zero;
}
