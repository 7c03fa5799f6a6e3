"""Thread IR: construction, hashing/equality, the walker, the namer and the printer."""
import pytest

from tvm_lite.errors import TLError
from tvm_lite.ir import thread as T
from tvm_lite.ir.thread_printer import format_thread_kernel


def _vector_add(threads=64):
    pa, pb, pc, pn = (T.Reg("a", T.u64), T.Reg("b", T.u64), T.Reg("c", T.u64), T.Reg("n", T.s32))
    ra = T.RegAllocator(p.name for p in (pa, pb, pc, pn))
    tid, cta, i, p = ra("tid", T.u32), ra("cta", T.u32), ra("i", T.s32), ra("p", T.pred)
    off, x, y = ra("off", T.u64), ra("x", T.f32), ra("y", T.f32)
    body = (
        T.SpecialReg(tid, T.SReg.TID_X),
        T.SpecialReg(cta, T.SReg.CTAID_X),
        T.Fma(i, cta, T.Imm(threads, T.u32), tid),
        T.Setp(T.Cmp.LT, p, i, pn),
        T.If(p, (
            T.Binary(T.BinOp.MUL_WIDE, off, i, T.Imm(4, T.s32)),
            T.Load((x,), T.Space.GLOBAL, pa, 0),
            T.Load((y,), T.Space.GLOBAL, pb, 0, pred=p),
            T.Binary(T.BinOp.ADD, x, x, y),
            T.Store(T.Space.GLOBAL, pc, 0, (x,)),
        ), (T.Comment("tail"),)),
        T.Loop((T.Break(p), T.Continue())),
        T.For(i, T.Imm(0, T.s32), pn, 2, (T.Barrier(),), unroll=2),
        T.Return(),
    )
    return T.ThreadKernel("vector_add", (pa, pb, pc, pn), threads, 0, body, (("k", 1),))


def test_types():
    assert T.hw_type("f16x2") is T.f16x2 and T.hw_type(".u32") is T.u32
    assert T.f16x2.is_packed and T.f16x2.is_float and T.f16x2.nbits == 32 and T.f16x2.element is T.f16
    assert T.bf16x2.element is T.bf16 and T.bf16.is_float and not T.bf16.is_signed
    assert T.s32.is_signed and not T.u32.is_signed and T.b32.is_int and not T.pred.is_int
    assert T.pred.is_pred and not T.f32.is_packed
    with pytest.raises(TLError):
        T.hw_type("i32")


def test_hash_eq():
    assert T.Reg("x", T.u32) == T.Reg("x", T.u32)
    assert T.Reg("x", T.u32) != T.Reg("x", T.s32)
    assert len({T.Reg("x", T.u32), T.Reg("x", T.u32), T.Imm(1, T.u32)}) == 2
    k1, k2 = _vector_add(), _vector_add()
    assert k1 == k2 and hash(k1) == hash(k2)
    assert _vector_add(32) != k1
    with pytest.raises(Exception):
        k1.name = "other"       # frozen


def test_namer_unique():
    ra = T.RegAllocator(["x_0"])
    regs = [ra("x", T.u32) for _ in range(5)] + [ra.new("x", T.f32), ra("1bad name", T.u32)]
    names = [r.name for r in regs]
    assert len(set(names)) == len(names) and "x_0" not in names
    assert all(n.replace("_", "a").isalnum() and not n[0].isdigit() for n in names)


def test_walk_and_regs():
    k = _vector_add()
    kinds = [type(s).__name__ for s in T.walk(k)]
    assert kinds.count("Store") == 1 and kinds.count("Comment") == 1
    assert kinds.count("Break") == 1 and kinds.count("Barrier") == 1
    assert kinds[:4] == ["SpecialReg", "SpecialReg", "Fma", "Setp"]
    assert len(kinds) == len(list(T.walk(k.body)))
    regs = T.all_regs(k)
    assert regs[:4] == list(k.params)
    assert len(regs) == len(set(regs))
    assert T.written(k.body[2]) == (k.body[2].dst,)
    assert k.meta_get("k") == 1 and k.meta_get("absent", 7) == 7


def test_print():
    k = _vector_add()
    text = format_thread_kernel(k)
    assert text == T.format_thread_kernel(k)
    lines = text.splitlines()
    assert lines[0].startswith(".entry vector_add(") and ".param .u64 a" in lines[0]
    assert any(line.strip() == "@%p_0 ld.global.f32 %y_0, [%b];" for line in lines)
    assert "    if %p_0 {" in lines and "    } else {" in lines
    assert "        st.global.f32 [%c], %x_0;" in lines
    assert any(line.startswith("    for %i_0 = 0; %i_0 < %n; %i_0 += 2 {") for line in lines)
    assert "        bar.sync 0;" in lines
    assert "        @%p_0 break;" in lines
    assert text.count("{") == text.count("}")


def test_print_every_statement():
    r = T.Reg("r", T.b32)
    f = T.Reg("f", T.f32)
    h = T.Reg("h", T.f16x2)
    stmts = [
        T.SharedBase(T.Reg("s", T.u32)), T.Mov(r, T.Imm(0x6400, T.b32)),
        T.Unary(T.UnOp.EX2, f, f), T.Cvt(T.Reg("q", T.s32), f, T.Rounding.RNI, True),
        T.CvtPack(h, f, f), T.Lop3(r, r, r, r, 0xEA), T.Prmt(r, r, r, T.Imm(0x5410, T.b32)),
        T.Shf(r, r, r, T.Imm(3, T.u32), True, False), T.Bfe(T.Reg("e", T.s32), r, T.Imm(4, T.u32), T.Imm(4, T.u32)),
        T.AtomicAdd(T.Space.GLOBAL, T.Reg("p", T.u64), 8, f),
        T.CpAsync(T.Reg("s", T.u32), T.Reg("p", T.u64), 16, T.Imm(8, T.u32)),
        T.CpAsyncCommit(), T.CpAsyncWait(1), T.Shfl(T.ShflMode.BFLY, r, r, T.Imm(1, T.u32), 0x1F),
        T.Ldmatrix((r, r, r, r), T.Reg("s", T.u32), True),
        T.Mma(T.MmaShape.M16N8K16, T.f16, (f,) * 4, (r,) * 4, (r,) * 2, (T.Imm(0.0, T.f32),) * 4),
        T.Setp(T.Cmp.NE, T.Reg("pp", T.pred), f, f), T.Selp(f, f, f, T.Reg("pp", T.pred)),
    ]
    text = format_thread_kernel(T.ThreadKernel("all", (), 32, 128, tuple(stmts)))
    for needle in ("lop3.b32 %r, %r, %r, %r, 0xea;", "prmt.b32 %r, %r, %r, 0x5410;",
                   "shf.l.wrap.b32", "bfe.s32 %e, %r, 4, 4;", "cvt.rni.sat.s32.f32 %q, %f;",
                   "cp.async.cg.shared.global [%s], [%p], 16, 8;", "cp.async.wait_group 1;",
                   "shfl.sync.bfly.b32 %r, %r, 1, 0x1f, 0xffffffff;",
                   "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%r, %r, %r, %r}, [%s];",
                   "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "setp.neu.f32",
                   "red.global.add.f32 [%p+8], %f;", "cvt.rn.f16x2.f32 %h, %f, %f;"):
        assert needle in text, needle
    assert "<" not in text          # every statement type has a spelling
