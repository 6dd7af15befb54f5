//! The filter compiler: a table of system calls and their actions in, a classic BPF program for
//! `seccomp(SECCOMP_SET_MODE_FILTER)` out.
//!
//! The program checks the architecture, refuses the x32 ABI on x86_64, then finds the call by a
//! binary search over ranges of syscall numbers that share one outcome, so a call costs a
//! dozen instructions whatever the size of the table. A call whose outcome depends on its
//! arguments ends in a block that tries its rules in order and falls back to its own action.

use std::collections::BTreeMap;

use super::{ArgCmp, Cmp};

/// One BPF instruction, as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SockFilter {
    pub(crate) code: u16,
    pub(crate) jt: u8,
    pub(crate) jf: u8,
    pub(crate) k: u32,
}

/// `BPF_LD | BPF_W | BPF_ABS` (the first two are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGT_K: u16 = 0x05 | 0x20;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

/// The kernel runs programs of at most this many instructions (`BPF_MAXINSNS`).
pub(crate) const MAX_INSTRUCTIONS: usize = 4096;

/// `SECCOMP_RET_KILL_PROCESS`: what a call from another ABI of the machine gets.
pub(crate) const RET_KILL_PROCESS: u32 = 0x8000_0000;

#[cfg(not(target_endian = "little"))]
compile_error!("the seccomp compiler reads arguments and the architecture as little-endian");

/// `AUDIT_ARCH_*` of the machine: only its native calls are looked up.
#[cfg(target_arch = "x86_64")]
pub(crate) const NATIVE_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub(crate) const NATIVE_ARCH: u32 = 0xC000_00B7;

/// Syscall numbers with this bit set are the x32 ABI, which shares x86_64's `AUDIT_ARCH`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn arg_low(index: u8) -> u32 {
    16 + 8 * index as u32
}

/// What one system call does: its conditional rules in order (all comparisons of a rule must
/// hold), then `fallback`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) rules: Vec<(Vec<ArgCmp>, u32)>,
    pub(crate) fallback: u32,
}

/// Compiles the table. `default` is returned for every number the table does not hold;
/// `unknown_abi` for x32 calls (x86_64). Fails only when the program would be too long.
pub(crate) fn compile(
    table: &BTreeMap<u32, Entry>,
    default: u32,
    unknown_abi: u32,
) -> Result<Vec<SockFilter>, usize> {
    let mut out = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        jump(BPF_JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    out.extend([jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1), stmt(BPF_RET_K, unknown_abi)]);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = unknown_abi;
    let segments = segments(table, default);
    emit_tree(&segments, table, &mut out).map_err(|()| out.len())?;
    if out.len() > MAX_INSTRUCTIONS { Err(out.len()) } else { Ok(out) }
}

/// What a range of numbers leads to: a plain return, or the block of one call with rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    Ret(u32),
    Rules(u32),
}

/// `(first number, leaf)` for consecutive ranges covering every number, neighbours merged.
fn segments(table: &BTreeMap<u32, Entry>, default: u32) -> Vec<(u32, Leaf)> {
    fn push(start: u32, leaf: Leaf, out: &mut Vec<(u32, Leaf)>) {
        match out.last_mut() {
            Some(last) if last.1 == leaf => {}
            Some(last) if last.0 == start => last.1 = leaf,
            _ => out.push((start, leaf)),
        }
    }
    let mut out: Vec<(u32, Leaf)> = vec![(0, Leaf::Ret(default))];
    for (&nr, entry) in table {
        let leaf = if entry.rules.is_empty() { Leaf::Ret(entry.fallback) } else { Leaf::Rules(nr) };
        push(nr, leaf, &mut out);
        if let Some(next) = nr.checked_add(1)
            && !table.contains_key(&next)
        {
            push(next, Leaf::Ret(default), &mut out);
        }
    }
    // Merging may have left a range equal to the one before it (after an in-place change).
    out.dedup_by(|b, a| a.1 == b.1);
    out
}

/// Emits a binary search over `segments`: at each node, `A >= pivot` jumps (through a long
/// `ja`, whatever the distance) to the upper half; otherwise the lower half follows.
fn emit_tree(
    segments: &[(u32, Leaf)],
    table: &BTreeMap<u32, Entry>,
    out: &mut Vec<SockFilter>,
) -> Result<(), ()> {
    if let [(_, leaf)] = segments {
        match *leaf {
            Leaf::Ret(k) => out.push(stmt(BPF_RET_K, k)),
            Leaf::Rules(nr) => emit_rules(&table[&nr], out)?,
        }
        return Ok(());
    }
    let mid = segments.len() / 2;
    out.push(jump(BPF_JGE_K, segments[mid].0, 0, 1));
    let ja = out.len();
    out.push(stmt(BPF_JMP_JA, 0));
    emit_tree(&segments[..mid], table, out)?;
    out[ja].k = (out.len() - ja - 1) as u32;
    emit_tree(&segments[mid..], table, out)
}

/// A call's rules in order; the first whose comparisons all hold gives its action.
/// Fails only if a rule is too long for a conditional jump past it (255 instructions; rules
/// of at most six comparisons need 43).
fn emit_rules(entry: &Entry, out: &mut Vec<SockFilter>) -> Result<(), ()> {
    for (args, action) in &entry.rules {
        let mut fails = Vec::new();
        for arg in args {
            emit_cmp(arg, out, &mut fails);
        }
        out.push(stmt(BPF_RET_K, *action));
        let next = out.len();
        for (at, field) in fails {
            let offset = u8::try_from(next - at - 1).map_err(drop)?;
            match field {
                Field::True => out[at].jt = offset,
                Field::False => out[at].jf = offset,
            }
        }
    }
    out.push(stmt(BPF_RET_K, entry.fallback));
    Ok(())
}

/// What `program` returns for system call `nr` of this machine's ABI with `args`: a small
/// interpreter of the instructions [`compile`] emits, to check a filter before it is used.
pub(crate) fn evaluate(program: &[SockFilter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut a, mut pc) = (0u32, 0usize);
    while let Some(i) = program.get(pc) {
        pc += 1;
        let cond = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
        match i.code {
            BPF_LD_W_ABS => {
                let k = i.k as usize;
                let word = data.get(k..k + 4).and_then(|w| <[u8; 4]>::try_from(w).ok()).unwrap_or_default();
                a = u32::from_ne_bytes(word);
            }
            BPF_ALU_AND_K => a &= i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JEQ_K => pc += cond(a == i.k),
            BPF_JGT_K => pc += cond(a > i.k),
            BPF_JGE_K => pc += cond(a >= i.k),
            BPF_RET_K => return i.k,
            _ => break,
        }
    }
    // The kernel refuses such a program; nothing compiled here is one.
    RET_KILL_PROCESS
}

/// Which branch of a conditional jump leads to "this rule does not match".
enum Field {
    True,
    False,
}

/// Emits one comparison: falls through when it holds; its failing branches are recorded in
/// `fails` for the caller to point past the rule. Arguments are little-endian (x86_64,
/// aarch64): the low word first.
fn emit_cmp(arg: &ArgCmp, out: &mut Vec<SockFilter>, fails: &mut Vec<(usize, Field)>) {
    let low_at = arg_low(arg.index);
    let (value, mask) = match arg.cmp {
        Cmp::MaskedEq { mask, value } => (value & mask, Some(mask)),
        Cmp::Eq(v) | Cmp::Ne(v) | Cmp::Lt(v) | Cmp::Le(v) | Cmp::Gt(v) | Cmp::Ge(v) => (v, None),
    };
    let (lo, hi) = (value as u32, (value >> 32) as u32);
    let (mask_lo, mask_hi) = mask.map_or((u32::MAX, u32::MAX), |m| (m as u32, (m >> 32) as u32));
    let mut fail = |out: &mut Vec<SockFilter>, insn: SockFilter, field: Field| {
        fails.push((out.len(), field));
        out.push(insn);
    };
    // The high word decides unless it equals the value's; then the low word does.
    if !arg.low32 {
        out.push(stmt(BPF_LD_W_ABS, low_at + 4));
        match arg.cmp {
            Cmp::Eq(_) => fail(out, jump(BPF_JEQ_K, hi, 0, 0), Field::False),
            Cmp::MaskedEq { .. } => {
                out.push(stmt(BPF_ALU_AND_K, mask_hi));
                fail(out, jump(BPF_JEQ_K, hi, 0, 0), Field::False);
            }
            // Different high words: not equal, so it holds: skip the low word's test.
            Cmp::Ne(_) => out.push(jump(BPF_JEQ_K, hi, 0, 2)),
            Cmp::Gt(_) | Cmp::Ge(_) => {
                out.push(jump(BPF_JGT_K, hi, 3, 0));
                fail(out, jump(BPF_JEQ_K, hi, 0, 0), Field::False);
            }
            Cmp::Lt(_) | Cmp::Le(_) => {
                out.push(jump(BPF_JGE_K, hi, 0, 3));
                fail(out, jump(BPF_JEQ_K, hi, 0, 0), Field::False);
            }
        }
    }
    out.push(stmt(BPF_LD_W_ABS, low_at));
    match arg.cmp {
        Cmp::Eq(_) => fail(out, jump(BPF_JEQ_K, lo, 0, 0), Field::False),
        Cmp::MaskedEq { .. } => {
            out.push(stmt(BPF_ALU_AND_K, mask_lo));
            fail(out, jump(BPF_JEQ_K, lo, 0, 0), Field::False);
        }
        Cmp::Ne(_) => fail(out, jump(BPF_JEQ_K, lo, 0, 0), Field::True),
        Cmp::Gt(_) => fail(out, jump(BPF_JGT_K, lo, 0, 0), Field::False),
        Cmp::Ge(_) => fail(out, jump(BPF_JGE_K, lo, 0, 0), Field::False),
        Cmp::Lt(_) => fail(out, jump(BPF_JGE_K, lo, 0, 0), Field::True),
        Cmp::Le(_) => fail(out, jump(BPF_JGT_K, lo, 0, 0), Field::True),
    }
}

const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter { code, jt: 0, jf: 0, k }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

#[cfg(test)]
mod tests {
    //! The compiled program is run here by [`evaluate`], so every comparison is checked against
    //! the plain Rust meaning of the rule.
    use super::*;

    fn holds(cmp: Cmp, low32: bool, v: u64) -> bool {
        let v = if low32 { v as u32 as u64 } else { v };
        let w = |x: u64| if low32 { x as u32 as u64 } else { x };
        match cmp {
            Cmp::Eq(x) => v == w(x),
            Cmp::Ne(x) => v != w(x),
            Cmp::Lt(x) => v < w(x),
            Cmp::Le(x) => v <= w(x),
            Cmp::Gt(x) => v > w(x),
            Cmp::Ge(x) => v >= w(x),
            Cmp::MaskedEq { mask, value } => v & w(mask) == w(value) & w(mask),
        }
    }

    #[test]
    fn every_comparison_matches_its_meaning_on_both_words() {
        let edges = [0u64, 1, 5, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0005, 0x5_0000_0000, u64::MAX, 6];
        let pivots = [5u64, 0x1_0000_0005, 0xffff_ffff, 0];
        for &p in &pivots {
            let cmps = [
                Cmp::Eq(p),
                Cmp::Ne(p),
                Cmp::Lt(p),
                Cmp::Le(p),
                Cmp::Gt(p),
                Cmp::Ge(p),
                Cmp::MaskedEq { mask: 0x1_0000_00f0, value: p },
            ];
            for cmp in cmps {
                for low32 in [false, true] {
                    let arg = ArgCmp { index: 2, cmp, low32 };
                    let mut table = BTreeMap::new();
                    table.insert(7, Entry { rules: vec![(vec![arg], 1)], fallback: 2 });
                    let prog = compile(&table, 3, 4).unwrap();
                    for &v in &edges {
                        let got = evaluate(&prog, 7, NATIVE_ARCH, [0, 0, v, 0, 0, 0]);
                        let want = if holds(cmp, low32, v) { 1 } else { 2 };
                        assert_eq!(got, want, "{cmp:?} low32={low32} on {v:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_search_finds_every_number_and_the_default_between() {
        let mut table = BTreeMap::new();
        for nr in (0..900u32).step_by(3) {
            table.insert(nr, Entry { rules: vec![], fallback: 100 + nr % 7 });
        }
        let prog = compile(&table, 9, 4).unwrap();
        for nr in 0..1000u32 {
            let want = if nr < 900 && nr % 3 == 0 { 100 + nr % 7 } else { 9 };
            assert_eq!(evaluate(&prog, nr, NATIVE_ARCH, [0; 6]), want, "syscall {nr}");
        }
        assert_eq!(evaluate(&prog, 3, 0x4000_0003, [0; 6]), RET_KILL_PROCESS, "another ABI");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(evaluate(&prog, X32_SYSCALL_BIT | 3, NATIVE_ARCH, [0; 6]), 4, "x32");
    }

    #[test]
    fn rules_are_tried_in_order_and_all_comparisons_of_a_rule_must_hold() {
        let eq = |index, v| ArgCmp { index, cmp: Cmp::Eq(v), low32: false };
        let mut table = BTreeMap::new();
        table.insert(
            1,
            Entry { rules: vec![(vec![eq(0, 1), eq(1, 2)], 10), (vec![eq(0, 1)], 11)], fallback: 12 },
        );
        let prog = compile(&table, 9, 4).unwrap();
        assert_eq!(evaluate(&prog, 1, NATIVE_ARCH, [1, 2, 0, 0, 0, 0]), 10);
        assert_eq!(evaluate(&prog, 1, NATIVE_ARCH, [1, 3, 0, 0, 0, 0]), 11);
        assert_eq!(evaluate(&prog, 1, NATIVE_ARCH, [2, 2, 0, 0, 0, 0]), 12);
        assert_eq!(evaluate(&prog, 2, NATIVE_ARCH, [1, 2, 0, 0, 0, 0]), 9);
    }
}
