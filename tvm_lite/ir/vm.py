"""VM IR: the block-level program, as the user wrote it.

A `Program` holds `Kernel`s. A kernel body is a tuple of statements executed by
one thread block. Values live in three memories:

* `GlobalTensor` - a kernel parameter in global memory; its shape may be
  symbolic in runtime scalar parameters (`Var`s). Sub-byte element types are
  packed bit streams (DESIGN.md section 4).
* `SharedTensor` - block-wide scratch memory with a compile-time shape.
* `RegisterTensor` - a tile distributed over the block's threads; its shape is
  compile-time and, after layout inference, it carries a `RegisterLayout`.

Scalars (`Expr`) are uniform across the block: runtime parameters, loop
variables, block indices and arithmetic on them.

Conventions (the verifier checks them):
* Every instruction writes at most one tensor, its `out` field. A register
  tensor is written by exactly one instruction, except that `Assign` may
  overwrite a tensor defined earlier (that is how loop-carried tiles such as a
  matmul accumulator are expressed).
* Nodes are frozen dataclasses. Tensors and `Var`s compare by identity
  (`eq=False`): two tensors with the same name are different values. Scalar
  expressions other than `Var` compare structurally.
* Instruction operands that are tiles are `RegisterTensor`s; element-wise
  instructions also accept scalar `Expr` operands, which broadcast.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from .dtypes import DataType, dtype

I32 = dtype("i32")
I64 = dtype("i64")
F32 = dtype("f32")
BOOL = dtype("u1")  # predicates: comparisons and logic produce u1


# ---------------------------------------------------------------- operators


class BinaryOp(enum.Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"        # true division (floats); on integers it is an error in the builder
    FLOOR_DIV = "//"
    MOD = "%"
    BIT_AND = "&"
    BIT_OR = "|"
    BIT_XOR = "^"
    SHL = "<<"
    SHR = ">>"
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="
    AND = "and"
    OR = "or"
    MIN = "min"
    MAX = "max"
    CDIV = "cdiv"

    @property
    def is_comparison(self) -> bool:
        return self in _COMPARISONS

    @property
    def is_function(self) -> bool:
        """Printed as a call (`min(a, b)`), not as an infix operator."""
        return self in (BinaryOp.MIN, BinaryOp.MAX, BinaryOp.CDIV)


_COMPARISONS = frozenset({BinaryOp.LT, BinaryOp.LE, BinaryOp.GT, BinaryOp.GE, BinaryOp.EQ, BinaryOp.NE})


class UnaryOp(enum.Enum):
    NEG = "-"
    INVERT = "~"
    NOT = "not"
    ABS = "abs"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"

    @property
    def is_function(self) -> bool:
        return self not in (UnaryOp.NEG, UnaryOp.INVERT, UnaryOp.NOT)


class ReduceOp(enum.Enum):
    SUM = "sum"
    MAX = "max"
    MIN = "min"


# ---------------------------------------------------------- scalar expressions


@dataclass(frozen=True)
class Expr:
    """A block-uniform scalar. Every expression knows its dtype."""

    @property
    def dtype(self) -> DataType:  # pragma: no cover - overridden
        raise NotImplementedError(type(self).__name__)


@dataclass(frozen=True)
class Const(Expr):
    value: Union[int, float, bool]
    type: DataType = I32

    @property
    def dtype(self) -> DataType:
        return self.type


@dataclass(frozen=True, eq=False)
class Var(Expr):
    """A named scalar: a runtime parameter, a loop variable or a scalar local."""
    name: str
    type: DataType = I32

    # Identity, not structure: Expr's generated __eq__ would make every Var
    # with the same fields equal, and scalar environments are keyed by Var.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def dtype(self) -> DataType:
        return self.type


@dataclass(frozen=True)
class BlockIdx(Expr):
    """`block.x` (axis 0), `block.y` (1), `block.z` (2)."""
    axis: int

    @property
    def dtype(self) -> DataType:
        return I32


@dataclass(frozen=True)
class Binary(Expr):
    op: BinaryOp
    lhs: Expr
    rhs: Expr
    type: DataType = I32

    @property
    def dtype(self) -> DataType:
        return self.type


@dataclass(frozen=True)
class Unary(Expr):
    op: UnaryOp
    operand: Expr
    type: DataType = I32

    @property
    def dtype(self) -> DataType:
        return self.type


@dataclass(frozen=True)
class Select(Expr):
    cond: Expr
    true_value: Expr
    false_value: Expr

    @property
    def dtype(self) -> DataType:
        return self.true_value.dtype


@dataclass(frozen=True)
class ScalarCast(Expr):
    value: Expr
    type: DataType

    @property
    def dtype(self) -> DataType:
        return self.type


# -------------------------------------------------------------------- tensors


@dataclass(frozen=True, eq=False)
class GlobalTensor:
    """A tensor parameter in global memory, row-major and contiguous."""
    name: str
    dtype: DataType
    shape: tuple[Expr, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True, eq=False)
class Pointer:
    """A raw `ptr` parameter: an address with no element type or shape."""
    name: str


@dataclass(frozen=True, eq=False)
class SharedTensor:
    name: str
    dtype: DataType
    shape: tuple[int, ...]
    layout: Optional[object] = None  # a SharedLayout once planned or given

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True, eq=False)
class RegisterTensor:
    name: str
    dtype: DataType
    shape: tuple[int, ...]
    layout: Optional[object] = None  # a RegisterLayout after layout inference

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


Param = Union[Var, GlobalTensor, Pointer]
Operand = Union[RegisterTensor, Expr]  # element-wise operands: tiles or scalars


# --------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instr:
    """Base of every statement that is not control flow."""


@dataclass(frozen=True)
class Load(Instr):
    """out[i] = src[offsets + i] where in range, else 0."""
    out: RegisterTensor
    src: GlobalTensor
    offsets: tuple[Expr, ...]


@dataclass(frozen=True)
class Store(Instr):
    """dst[offsets + i] = value[i] where in range; other writes are dropped."""
    dst: GlobalTensor
    value: RegisterTensor
    offsets: tuple[Expr, ...]


@dataclass(frozen=True)
class AtomicAdd(Instr):
    """dst[offsets + i] += value[i] atomically, where in range."""
    dst: GlobalTensor
    value: RegisterTensor
    offsets: tuple[Expr, ...]


@dataclass(frozen=True)
class AllocShared(Instr):
    out: SharedTensor


@dataclass(frozen=True)
class LoadShared(Instr):
    """out[i] = src[offsets + i]; shared accesses must be in range."""
    out: RegisterTensor
    src: SharedTensor
    offsets: tuple[Expr, ...]


@dataclass(frozen=True)
class StoreShared(Instr):
    dst: SharedTensor
    value: RegisterTensor
    offsets: tuple[Expr, ...]


@dataclass(frozen=True)
class CopyAsync(Instr):
    """Asynchronously dst[i] = src[offsets + i] (0 out of range); see WaitAsync."""
    dst: SharedTensor
    src: GlobalTensor
    offsets: tuple[Expr, ...]


@dataclass(frozen=True)
class CommitAsync(Instr):
    """Close the current group of copy_async operations."""


@dataclass(frozen=True)
class WaitAsync(Instr):
    """Wait until at most `n` committed copy groups are still in flight."""
    n: int


@dataclass(frozen=True)
class Barrier(Instr):
    """All threads of the block reach this point; shared writes become visible."""


@dataclass(frozen=True)
class Full(Instr):
    """out[i] = value (zeros(...) is Full with 0)."""
    out: RegisterTensor
    value: Expr


@dataclass(frozen=True)
class Arange(Instr):
    """out[i] = start + i for a 1-D out."""
    out: RegisterTensor
    start: Expr


@dataclass(frozen=True)
class Cast(Instr):
    """Value conversion: floats round to nearest even and saturate."""
    out: RegisterTensor
    x: RegisterTensor


@dataclass(frozen=True)
class View(Instr):
    """Reinterpret the bits each thread holds; no data moves."""
    out: RegisterTensor
    x: RegisterTensor


@dataclass(frozen=True)
class Annotate(Instr):
    """out is x with a pinned register layout."""
    out: RegisterTensor
    x: RegisterTensor
    layout: object


@dataclass(frozen=True)
class Dot(Instr):
    """out = a @ b + acc, computed in acc's precision. a: [M,K], b: [K,N]."""
    out: RegisterTensor
    a: RegisterTensor
    b: RegisterTensor
    acc: RegisterTensor


class ElementOp(enum.Enum):
    """Element-wise tile operations; binary ones mirror BinaryOp."""
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    FLOOR_DIV = "//"
    MOD = "%"
    BIT_AND = "&"
    BIT_OR = "|"
    BIT_XOR = "^"
    SHL = "<<"
    SHR = ">>"
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="
    AND = "and"
    OR = "or"
    MIN = "min"
    MAX = "max"
    NEG = "neg"
    INVERT = "~"
    NOT = "not"
    ABS = "abs"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    RSQRT = "rsqrt"
    WHERE = "where"

    @property
    def arity(self) -> int:
        if self is ElementOp.WHERE:
            return 3
        if self in _UNARY_ELEMENT_OPS:
            return 1
        return 2


_UNARY_ELEMENT_OPS = frozenset({ElementOp.NEG, ElementOp.INVERT, ElementOp.NOT, ElementOp.ABS,
                                ElementOp.EXP, ElementOp.LOG, ElementOp.SQRT, ElementOp.RSQRT})


@dataclass(frozen=True)
class Elementwise(Instr):
    """out[i] = op(args[0][i], ...) with numpy broadcasting of tiles and scalars.

    Arithmetic is in out.dtype; comparisons compare in the operands' dtype and
    produce u1. `where(c, x, y)` takes a u1 condition.
    """
    out: RegisterTensor
    op: ElementOp
    args: tuple[Operand, ...]


@dataclass(frozen=True)
class Reduce(Instr):
    """Reduce x over `dim`. With keepdim the dim stays with size 1."""
    out: RegisterTensor
    x: RegisterTensor
    op: ReduceOp
    dim: int
    keepdim: bool = False


@dataclass(frozen=True)
class Reshape(Instr):
    out: RegisterTensor
    x: RegisterTensor


@dataclass(frozen=True)
class Transpose(Instr):
    out: RegisterTensor
    x: RegisterTensor
    perm: tuple[int, ...]


@dataclass(frozen=True)
class BroadcastTo(Instr):
    out: RegisterTensor
    x: RegisterTensor


@dataclass(frozen=True)
class Concat(Instr):
    out: RegisterTensor
    parts: tuple[RegisterTensor, ...]
    dim: int


@dataclass(frozen=True)
class Slice(Instr):
    """out = x[starts[0]:starts[0]+out.shape[0], ...] with compile-time starts."""
    out: RegisterTensor
    x: RegisterTensor
    starts: tuple[int, ...]


@dataclass(frozen=True)
class Assign(Instr):
    """Overwrite an earlier tile with x (same dtype and shape)."""
    out: RegisterTensor
    x: RegisterTensor


@dataclass(frozen=True)
class ConvertLayout(Instr):
    """dst = src with another register layout (same dtype and shape).

    Inserted by GPU layout inference (passes/gpu_layouts.py) wherever a
    consumer needs a layout other than its producer's; the lowering moves the
    data through a shared-memory scratch buffer planned by
    passes/shared_plan.py. Built positionally as ConvertLayout(dst, src); the
    fields follow the VM convention (`out` is the one tile written, `x` the
    tile read), with `dst`/`src` as aliases. On the value level it is the
    identity (interp/cpu copy the tile).
    """
    out: RegisterTensor
    x: RegisterTensor

    @property
    def dst(self) -> RegisterTensor:
        return self.out

    @property
    def src(self) -> RegisterTensor:
        return self.x


@dataclass(frozen=True)
class SetScalar(Instr):
    """Scalar local: var = value (first assignment declares it)."""
    var: Var
    value: Expr


# ---------------------------------------------------------------- control flow


@dataclass(frozen=True)
class For:
    var: Var
    start: Expr
    stop: Expr
    step: Expr
    body: tuple["Stmt", ...]
    unroll: Optional[int] = None


@dataclass(frozen=True)
class If:
    cond: Expr
    then_body: tuple["Stmt", ...]
    else_body: tuple["Stmt", ...] = ()


@dataclass(frozen=True)
class While:
    cond: Expr
    body: tuple["Stmt", ...]


@dataclass(frozen=True)
class Break:
    pass


@dataclass(frozen=True)
class Continue:
    pass


@dataclass(frozen=True)
class Return:
    pass


Stmt = Union[Instr, For, If, While, Break, Continue, Return]


# ------------------------------------------------------------- kernel, program


@dataclass(frozen=True)
class Kernel:
    """One `@kernel`: its signature, launch shape and body.

    `constants` records the compile-time parameters it was specialized with
    (name -> int | bool | DataType), for printing and cache keys.
    `min_blocks` (0: none) is the number of blocks per SM the GPU assembler
    must make room for, which bounds the registers per thread.
    """
    name: str
    params: tuple[Param, ...]
    warps: int
    grid: tuple[Expr, ...]
    body: tuple[Stmt, ...]
    constants: tuple[tuple[str, object], ...] = ()
    min_blocks: int = 0

    @property
    def num_threads(self) -> int:
        return self.warps * 32

    @property
    def tensor_params(self) -> tuple[GlobalTensor, ...]:
        return tuple(p for p in self.params if isinstance(p, GlobalTensor))

    @property
    def scalar_params(self) -> tuple[Var, ...]:
        return tuple(p for p in self.params if isinstance(p, Var))


@dataclass(frozen=True)
class Program:
    kernels: tuple[Kernel, ...]
    filename: str = "<string>"

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(name)

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.kernels)


def const(value, type: DataType | None = None) -> Const:
    """A constant of the natural dtype: bool -> u1, int -> i32, float -> f32."""
    if type is None:
        if isinstance(value, bool):
            type = BOOL
        elif isinstance(value, int):
            type = I32 if -(2**31) <= value < 2**31 else I64
        else:
            type = F32
    return Const(value, type)
