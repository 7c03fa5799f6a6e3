"""CPU lowering of the compute and shape instructions (a KernelCodegen mixin).

Each instruction is a loop over its output elements that reads operands as
compute values (i64 / double), applies the shared scalar rules of cpu_math and
writes the result back with rounding or wrapping.
"""
from __future__ import annotations

from types import SimpleNamespace

import llvmlite.ir as ir

from ..ir import vm
from .cpu_types import F32, F64, I32, I64, compute_type, row_major_strides, storage_type


class ComputeEmitters:
    # ---------------------------------------------------------- helpers
    def copy_element(self, src, sflat: ir.Value, dst, dflat: ir.Value) -> None:
        """Storage-level copy between tiles of the same dtype."""
        self.b.store(self.b.load(self.element_ptr(src, sflat)), self.element_ptr(dst, dflat))

    def flat_of(self, index: list[ir.Value], strides) -> ir.Value:
        flat = ir.Constant(I64, 0)
        for i, st in zip(index, strides):
            flat = self.b.add(flat, self.b.mul(i, ir.Constant(I64, st)))
        return flat

    def copy_tile(self, s) -> None:
        self.tile(s.out)
        self.elements(s.out.shape, lambda flat, index: self.copy_element(s.x, flat, s.out, flat))

    # ----------------------------------------------------------- creation
    def emit_Full(self, s: vm.Full) -> None:
        self.tile(s.out)
        value = self.scalar(s.value)
        if value.type != compute_type(s.out.dtype):
            value = self.b.sitofp(value, F64) if s.out.dtype.is_float else \
                self.conv.float_to_int(value, s.out.dtype)
        self.elements(s.out.shape, lambda flat, index: self.write(s.out, flat, value))

    def emit_Arange(self, s: vm.Arange) -> None:
        self.tile(s.out)
        start = self.scalar(s.start)
        self.elements(s.out.shape, lambda flat, index: self.write(s.out, flat, self.b.add(start, flat)))

    def emit_Cast(self, s: vm.Cast) -> None:
        self.tile(s.out)
        src, dst = s.x.dtype, s.out.dtype

        def each(flat, index):
            v = self.read(s.x, flat)
            if dst.is_float and not src.is_float:
                v = self.b.sitofp(v, F64)
            elif dst.is_integer and src.is_float:
                v = self.conv.float_to_int(v, dst)
            self.write(s.out, flat, v)
        self.elements(s.out.shape, each)

    def emit_Annotate(self, s: vm.Annotate) -> None:
        self.copy_tile(s)

    def emit_Assign(self, s: vm.Assign) -> None:
        self.copy_tile(s)

    def emit_Reshape(self, s: vm.Reshape) -> None:
        self.copy_tile(s)

    # ------------------------------------------------------------- view
    def _storage_bits(self, t, flat: ir.Value) -> ir.Value:
        """The bit pattern of a tile element, zero-extended to i64."""
        b = self.b
        raw = b.load(self.element_ptr(t, flat))
        if raw.type == F32:
            raw = b.bitcast(raw, I32)
        elif raw.type == F64:
            raw = b.bitcast(raw, I64)
        bits = raw if raw.type == I64 else b.zext(raw, I64)
        return b.and_(bits, ir.Constant(I64, t.dtype.mask if t.dtype.nbits < 64 else -1))

    def _store_bits(self, t, flat: ir.Value, bits: ir.Value) -> None:
        b = self.b
        st = storage_type(t.dtype)
        if st == F32:
            value = b.bitcast(b.trunc(bits, I32), F32)
        elif st == F64:
            value = b.bitcast(bits, F64)
        else:
            value = self.conv.wrap(bits, t.dtype) if t.dtype.is_integer else bits
            value = value if st.width == 64 else b.trunc(value, st)
        b.store(value, self.element_ptr(t, flat))

    def emit_View(self, s: vm.View) -> None:
        from .cpu_memory import read_bits, write_bits
        self.tile(s.out)
        total_bits = s.x.size * s.x.dtype.nbits
        nbytes = (total_bits + 7) // 8
        buf = self.alloca(ir.IntType(8), nbytes, name=f"{s.out.name}.bits")
        self.b.call(self.intrinsic_memset(), [buf, ir.Constant(ir.IntType(8), 0),
                                              ir.Constant(I64, nbytes), ir.Constant(ir.IntType(1), 0)])

        def stream(dt, count):
            return SimpleNamespace(tensor=SimpleNamespace(dtype=dt), base=buf, numel=ir.Constant(I64, count))
        src, dst = stream(s.x.dtype, s.x.size), stream(s.out.dtype, s.out.size)
        self.elements(s.x.shape, lambda flat, index: write_bits(self, src, flat, self._storage_bits(s.x, flat)))
        self.elements(s.out.shape, lambda flat, index: self._store_bits(
            s.out, flat, read_bits(self, dst, flat)))

    def intrinsic_memset(self) -> ir.Function:
        name = "llvm.memset.p0.i64"
        if name in self.module.globals:
            return self.module.globals[name]
        fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8)), ir.IntType(8), I64, ir.IntType(1)])
        return ir.Function(self.module, fnty, name=name)

    # ---------------------------------------------------------- compute
    def emit_Elementwise(self, s: vm.Elementwise) -> None:
        self.tile(s.out)
        scalars = {i: self.scalar(a) for i, a in enumerate(s.args) if isinstance(a, vm.Expr)}

        def each(flat, index):
            vals = [scalars[i] if i in scalars else
                    self.read(a, self.broadcast_flat(a.shape, s.out.shape, index))
                    for i, a in enumerate(s.args)]
            if s.op is vm.ElementOp.WHERE:
                v = self.math.where(*vals)
            elif s.op.arity == 1:
                v = self.math.unary(s.op.name, vals[0])
            else:
                v = self.math.binary(s.op.name, vals[0], vals[1])
            if s.out.dtype.is_float and v.type == I64:
                v = self.b.sitofp(v, F64)
            self.write(s.out, flat, v)
        self.elements(s.out.shape, each)

    def _widened_copy(self, t, name: str, ty: ir.Type) -> ir.Value:
        """t's elements as values of type `ty` in a scratch array (decoded once)."""
        buf = self.alloca(ty, max(1, t.size), name=name)

        def each(flat, index):
            v = self.read(t, flat)
            if ty == F32:
                v = self.b.fptrunc(v, F32)   # exact: the operands have at most f32's precision
            self.b.store(v, self.b.gep(buf, [flat]))
        self.elements(t.shape, each)
        return buf

    def emit_Dot(self, s: vm.Dot) -> None:
        """acc + a @ b in the compute type, i-k-j order so the inner loop runs
        along contiguous rows of b and of the accumulator (and vectorizes)."""
        self.tile(s.out)
        b = self.b
        (m, k), n = s.a.shape, s.b.shape[1]
        # "The accumulator's precision": an f32 accumulator sums in f32, which
        # also doubles the SIMD width; others (f64, f16, integers) use the
        # compute type, then round once.
        single = s.out.dtype.name == "f32" and s.a.dtype.is_float and s.a.dtype.mantissa_bits <= 23 \
            and s.a.dtype.exponent_bits <= 8
        ty = F32 if single else compute_type(s.out.dtype)
        a_buf, b_buf = self._widened_copy(s.a, "dot.a", ty), self._widened_copy(s.b, "dot.b", ty)
        acc = self._widened_copy(s.acc, "dot.acc", ty)
        float_acc = s.out.dtype.is_float
        c = lambda v: ir.Constant(I64, v)  # noqa: E731

        def row(i):
            def inner(kk):
                av = b.load(b.gep(a_buf, [b.add(b.mul(i, c(k)), kk)]))
                if float_acc and av.type == I64:
                    av = b.sitofp(av, F64)

                def column(j):
                    bv = b.load(b.gep(b_buf, [b.add(b.mul(kk, c(n)), j)]))
                    if float_acc and bv.type == I64:
                        bv = b.sitofp(bv, F64)
                    ptr = b.gep(acc, [b.add(b.mul(i, c(n)), j)])
                    b.store(self.math.accumulate(b.load(ptr), self.math.product(av, bv)), ptr)
                self.counted_loop(n, column, "j")
            self.counted_loop(k, inner, "k")
        self.counted_loop(m, row, "i")
        def result(flat, index):
            v = b.load(b.gep(acc, [flat]))
            self.write(s.out, flat, b.fpext(v, F64) if v.type == F32 else v)
        self.elements(s.out.shape, result)

    def emit_Reduce(self, s: vm.Reduce) -> None:
        self.tile(s.out)
        in_strides = row_major_strides(s.x.shape)
        n = s.x.shape[s.dim]
        acc = self.alloca(compute_type(s.out.dtype), name="red.acc")

        def each(flat, index):
            index = list(index)
            if not s.keepdim:
                index.insert(s.dim, ir.Constant(I64, 0))
            index[s.dim] = ir.Constant(I64, 0)
            base = self.flat_of(index, in_strides)
            stride = ir.Constant(I64, in_strides[s.dim])
            self.b.store(self.read(s.x, base), acc)

            def step(kk):
                kk = self.b.add(kk, ir.Constant(I64, 1))
                v = self.read(s.x, self.b.add(base, self.b.mul(kk, stride)))
                old = self.b.load(acc)
                if s.op is vm.ReduceOp.SUM:
                    new = self.math.accumulate(old, v)
                else:
                    new = self.math.minmax(old, v, s.op is vm.ReduceOp.MIN)
                self.b.store(new, acc)
            self.counted_loop(n - 1, step, "r")
            self.write(s.out, flat, self.b.load(acc))
        self.elements(s.out.shape, each)

    # ------------------------------------------------------------ shapes
    def emit_Transpose(self, s: vm.Transpose) -> None:
        self.tile(s.out)
        in_strides = row_major_strides(s.x.shape)
        strides = [in_strides[p] for p in s.perm]
        self.elements(s.out.shape, lambda flat, index: self.copy_element(
            s.x, self.flat_of(index, strides), s.out, flat))

    def emit_BroadcastTo(self, s: vm.BroadcastTo) -> None:
        self.tile(s.out)
        self.elements(s.out.shape, lambda flat, index: self.copy_element(
            s.x, self.broadcast_flat(s.x.shape, s.out.shape, index), s.out, flat))

    def emit_Slice(self, s: vm.Slice) -> None:
        self.tile(s.out)
        in_strides = row_major_strides(s.x.shape)
        base = sum(a * st for a, st in zip(s.starts, in_strides))

        def each(flat, index):
            src = self.b.add(self.flat_of(index, in_strides), ir.Constant(I64, base))
            self.copy_element(s.x, src, s.out, flat)
        self.elements(s.out.shape, each)

    def emit_Concat(self, s: vm.Concat) -> None:
        self.tile(s.out)
        out_strides = row_major_strides(s.out.shape)
        start = 0
        for part in s.parts:
            offset = start * out_strides[s.dim]

            def each(flat, index, part=part, offset=offset):
                dst = self.b.add(self.flat_of(index, out_strides), ir.Constant(I64, offset))
                self.copy_element(part, flat, s.out, dst)
            self.elements(part.shape, each)
            start += part.shape[s.dim]


__all__ = ["ComputeEmitters"]
