//! The kfunc call of the TC program: aya 0.14 resolves no kfunc calls, so the
//! object carries `bpf_sk_assign_tcp_reqsk`'s call as a raw instruction with a
//! placeholder `imm`; [`patch_kfunc_calls`] writes the kfunc's id in the
//! kernel's BTF there before aya parses the object.

use anyhow::Context;
use aya::Btf;
use aya_obj::btf::BtfKind;
use gateway_common::syncookie::KFUNC_PLACEHOLDER;

/// The kfunc the TC program calls.
pub const KFUNC: &str = "bpf_sk_assign_tcp_reqsk";

/// The kfunc's id in the running kernel's BTF.
pub fn kfunc_btf_id() -> anyhow::Result<u32> {
    let btf = Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
    btf.id_by_type_name_kind(KFUNC, BtfKind::Func)
        .map_err(|_| anyhow::anyhow!("the kernel has no kfunc {KFUNC} (needs Linux 6.9+)"))
}

/// The placeholder kfunc call instruction as it sits in the object (little endian).
fn placeholder_instruction() -> [u8; 8] {
    let mut insn = [0x85, 0x20, 0, 0, 0, 0, 0, 0];
    insn[4..].copy_from_slice(&KFUNC_PLACEHOLDER.to_le_bytes());
    insn
}

/// `object` with every placeholder kfunc call pointed at `btf_id`, in an
/// 8-byte aligned buffer (the ELF parser wants aligned headers), and how many
/// calls were patched.
pub fn patch_kfunc_calls(object: &[u8], btf_id: u32) -> (AlignedObject, usize) {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    let mut aligned = AlignedObject {
        words: Vec::new(),
        len: object.len(),
    };
    let bytes = {
        // SAFETY: a u64 buffer viewed as bytes; u8 has no alignment or validity needs.
        let all = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        &mut all[..object.len()]
    };
    bytes.copy_from_slice(object);
    let placeholder = placeholder_instruction();
    let mut patched = 0;
    // Instructions are 8-byte aligned within their section, and sections are
    // 8-byte aligned in the file: step by 8.
    for insn in bytes.chunks_exact_mut(8) {
        if insn == placeholder {
            insn[4..].copy_from_slice(&btf_id.to_le_bytes());
            patched += 1;
        }
    }
    aligned.words = words;
    (aligned, patched)
}

/// An object file in 8-byte aligned memory.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the u64 buffer, which holds at least that many.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_carries_one_placeholder_call_and_patching_replaces_it() {
        let (object, patched) = patch_kfunc_calls(super::super::OBJECT, 4242);
        assert_eq!(patched, 1);
        let (_, again) = patch_kfunc_calls(object.bytes(), 4242);
        assert_eq!(again, 0);
        assert_eq!(object.bytes().len(), super::super::OBJECT.len());
    }
}
