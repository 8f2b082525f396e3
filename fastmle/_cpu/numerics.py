"""Scalar math that LLVM can vectorize.

Numba's LLVM has no vector math library, so a loop calling ``math.exp`` or
``math.log`` runs one libm call per element (see ``shared/NOTES.md``). The
functions here are written in plain float arithmetic plus bit reinterpretation,
so loops that call them compile to SIMD code.

Each function has a float32 and a float64 implementation with constants of the
same type (a float64 constant would silently promote float32 work to float64),
and a generic entry point (``exp``, ``log``, ``log1p``, ``sortable``) that picks
one by the argument's type at compile time.

None of them is compiled with ``fastmath``: the range reductions below rely on
IEEE rounding (``reassoc`` would fold ``e - (u - 1)`` to zero) and on NaN
comparisons (``nnan`` would drop the NaN checks). Multiply-adds are explicit
(:func:`fmuladd`), so they fuse where the CPU has FMA without the use-dependent
choices of ``contract``. Accuracy is checked against NumPy in
``tests/test_math.py``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .jit import HELPER_OPTIONS, NO_WRAPPERS, inner

__all__ = [
    "borrowed",
    "exp",
    "exp_nonpos",
    "log",
    "log1p",
    "atanh2_third",
    "sortable",
    "from_sortable",
    "stream_copy",
    "store_fence",
]


# --- bit reinterpretation (an LLVM bitcast; ``ndarray.view`` would block SIMD) ----


def _int_type(fty):
    return types.int32 if fty.bitwidth == 32 else types.int64


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of float ``x`` as a signed integer of the same width."""
    if not isinstance(x, types.Float):
        return None
    ity = _int_type(x)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(ity))

    return ity(x), codegen


@intrinsic
def _from_bits(typingctx, i, like):
    """The float of ``like``'s type whose bits are the low bits of integer ``i``."""
    if not (isinstance(i, types.Integer) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(like)
        ity = ir.IntType(like.bitwidth)
        v = args[0]
        if i.bitwidth > like.bitwidth:
            v = builder.trunc(v, ity)
        elif i.bitwidth < like.bitwidth:
            v = builder.sext(v, ity)
        return builder.bitcast(v, fty)

    return like(i, like), codegen


def _pow2_ir(context, builder, k, n):
    """IR of 2**k as a float of Numba type ``n`` from an integer ``k`` of its width
    (k + bias in the exponent field: k in the normal exponent range)."""
    mant, bias = (23, 127) if n.bitwidth == 32 else (52, 1023)
    ity = ir.IntType(n.bitwidth)
    e = builder.shl(builder.add(k, ir.Constant(ity, bias)), ir.Constant(ity, mant))
    return builder.bitcast(e, context.get_value_type(n))


@intrinsic
def _pow2(typingctx, n):
    """2**n for an integral-valued float ``n`` in the normal exponent range."""
    if not isinstance(n, types.Float):
        return None

    def codegen(context, builder, sig, args):
        k = builder.fptosi(args[0], ir.IntType(n.bitwidth))
        return _pow2_ir(context, builder, k, n)

    return n(n), codegen


@intrinsic
def _pow2_halves(typingctx, n):
    """(2**floor(n/2), 2**(n - floor(n/2))) for an integral-valued float ``n`` whose
    halves are in the normal exponent range: their product is 2**n also where 2**n
    alone is subnormal or overflows. Integer arithmetic (one conversion, an
    arithmetic shift) in place of np.floor and a second conversion: the same bits,
    fewer instructions (Poisson NLL value and gradient, 2e7 float32 on AVX-512:
    12.7 -> 11.5 ms into another buffer, 60 -> 37 ms in place; measured)."""
    if not isinstance(n, types.Float):
        return None

    def codegen(context, builder, sig, args):
        ity = ir.IntType(n.bitwidth)
        k = builder.fptosi(args[0], ity)
        k1 = builder.ashr(k, ir.Constant(ity, 1))  # floor(k / 2), negative k too
        k2 = builder.sub(k, k1)
        halves = [_pow2_ir(context, builder, k1, n), _pow2_ir(context, builder, k2, n)]
        return context.make_tuple(builder, sig.return_type, halves)

    return types.UniTuple(n, 2)(n), codegen


def _flip_codegen(w):
    # b ^ ((b >> (w-1)) & 0x7f..f): flips the magnitude bits of negative floats so
    # that signed-integer order equals float order. The map is its own inverse.
    def flip(builder, b):
        lty = ir.IntType(w)
        sign = builder.ashr(b, ir.Constant(lty, w - 1))
        return builder.xor(b, builder.and_(sign, ir.Constant(lty, (1 << (w - 1)) - 1)))

    return flip


@intrinsic
def sortable(typingctx, x):
    """Map a float to a signed integer with the same ordering (for SIMD max).

    Integer max reductions vectorize without fast-math flags; float ones do not.
    Positive NaNs map above +inf, so a max over keys also reports NaN.
    """
    if not isinstance(x, types.Float):
        return None
    ity = _int_type(x)
    flip = _flip_codegen(x.bitwidth)

    def codegen(context, builder, sig, args):
        return flip(builder, builder.bitcast(args[0], ir.IntType(x.bitwidth)))

    return ity(x), codegen


@intrinsic
def from_sortable(typingctx, k, like):
    """Inverse of :func:`sortable`; ``like`` supplies the float type."""
    if not (isinstance(k, types.Integer) and isinstance(like, types.Float)):
        return None
    if k.bitwidth != like.bitwidth:
        return None
    flip = _flip_codegen(like.bitwidth)

    def codegen(context, builder, sig, args):
        return builder.bitcast(flip(builder, args[0]), context.get_value_type(like))

    return like(k, like), codegen


@intrinsic
def fmuladd(typingctx, a, b, c):
    """a * b + c as ``llvm.fmuladd``: one fused instruction where the CPU has FMA.

    Unlike fast-math "contract", the choice is made per call, not by how the
    product is used elsewhere, so a formula rounds the same in every loop.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        lty = context.get_value_type(a)
        fnty = ir.FunctionType(lty, [lty, lty, lty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fmuladd.f{a.bitwidth}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


# --- streaming (non-temporal) stores ---------------------------------------------
# A gradient much larger than the caches is written once and not read again soon:
# ordinary stores first read each cache line they write (a third more memory
# traffic than a copy, which glibc's memcpy does with non-temporal stores). LLVM
# emits a non-temporal vector store (x86 ``movntps``) only for an aligned vector
# store with ``!nontemporal`` metadata, which a vectorized loop never is, so the
# loop is written here in IR: a scalar head up to a 64-byte boundary of ``dst``,
# 64-byte aligned vector stores, a scalar tail.

_VECTOR_BYTES = 64


@intrinsic
def stream_copy(typingctx, src, dst):
    """``dst[:] = src[:]`` for 1-D contiguous arrays of one size and dtype, written
    with non-temporal stores (the bits are copied: no rounding, NaN kept). Call
    :func:`store_fence` before another thread may read ``dst``."""
    if not (
        isinstance(src, types.Array)
        and isinstance(dst, types.Array)
        and src.ndim == dst.ndim == 1
        and src.dtype == dst.dtype
        and isinstance(src.dtype, types.Float)
    ):
        return None

    def codegen(context, builder, sig, args):
        sty, dty = sig.args
        s_arr = context.make_array(sty)(context, builder, args[0])
        d_arr = context.make_array(dty)(context, builder, args[1])
        n = builder.extract_value(d_arr.shape, 0)
        elt = context.get_value_type(dty.dtype)
        isz = dty.dtype.bitwidth // 8
        width = _VECTOR_BYTES // isz
        vty = ir.VectorType(elt, width)
        intp = n.type
        zero, one, vw = (ir.Constant(intp, v) for v in (0, 1, width))
        nt = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        fn = builder.function
        blocks = [
            fn.append_basic_block(f"stream.{b}")
            for b in ("head", "head_body", "body", "body_body", "tail", "tail_body", "done")
        ]
        head, head_body, body, body_body, tail, tail_body, done = blocks
        i_ptr = cgutils.alloca_once_value(builder, zero)

        def copy_one(i):
            builder.store(builder.load(builder.gep(s_arr.data, [i])), builder.gep(d_arr.data, [i]))
            builder.store(builder.add(i, one), i_ptr)

        builder.branch(head)
        builder.position_at_end(head)  # scalar stores up to a 64-byte boundary of dst
        i = builder.load(i_ptr)
        addr = builder.ptrtoint(builder.gep(d_arr.data, [i]), intp)
        misaligned = builder.icmp_unsigned(
            "!=", builder.and_(addr, ir.Constant(intp, _VECTOR_BYTES - 1)), zero
        )
        builder.cbranch(builder.and_(builder.icmp_signed("<", i, n), misaligned), head_body, body)
        builder.position_at_end(head_body)
        copy_one(i)
        builder.branch(head)
        builder.position_at_end(body)  # aligned non-temporal vector stores
        i = builder.load(i_ptr)
        builder.cbranch(builder.icmp_signed("<=", builder.add(i, vw), n), body_body, tail)
        builder.position_at_end(body_body)
        v = builder.load(builder.bitcast(builder.gep(s_arr.data, [i]), vty.as_pointer()), align=isz)
        st = builder.store(
            v, builder.bitcast(builder.gep(d_arr.data, [i]), vty.as_pointer()), align=_VECTOR_BYTES
        )
        st.set_metadata("nontemporal", nt)
        builder.store(builder.add(i, vw), i_ptr)
        builder.branch(body)
        builder.position_at_end(tail)  # the last few elements
        i = builder.load(i_ptr)
        builder.cbranch(builder.icmp_signed("<", i, n), tail_body, done)
        builder.position_at_end(tail_body)
        copy_one(i)
        builder.branch(tail)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return types.none(src, dst), codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: orders this thread's non-temporal stores before anything
    another thread may see afterwards (x86 ``mfence``)."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


# --- borrowed arrays ----------------------------------------------------------------
# Every view a kernel takes (``x[i]``, ``g[lo:hi]``) increments and later decrements
# its array's reference count with an atomic ``lock`` instruction, which on x86 also
# waits for all of the thread's pending non-temporal stores: once per row, that cost
# the cross-entropy gradient pass 40% (60 -> 84 ms per 65536 x 1000 float32 on one
# thread; 15% of its samples on one ``lock decq``, measured). Numba's parallel loops
# never paid it: they see their arrays without a reference count.


@intrinsic
def borrowed(typingctx, a):
    """``a`` without a reference count (its views are not counted either): for use
    while the caller keeps ``a`` alive, i.e. inside the kernel it was passed to."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(a)(context, builder, value=args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()

    return a(a), codegen


# --- exp ----------------------------------------------------------------------
# exp(x) = 2**n * exp(f), n = rint(x / ln2), |f| <= ln2 / 2, exp(f) by its Taylor
# polynomial (degree 7 for float32, 13 for float64: truncation < 1e-8 / 1e-17
# relative). 2**n is applied as two factors so that results in the subnormal range
# round once and correctly, and overflow gives inf.

_LN2_HI = 0.693145751953125  # ln2 split so that n * _LN2_HI is exact
_LN2_LO = 1.42860682030941723212e-6


def _make_exp(ft, degree, lo, hi):
    log2e = ft(1.4426950408889634)
    ln2_hi, ln2_lo = ft(_LN2_HI), ft(_LN2_LO)
    c = tuple(ft(1.0 / math.factorial(k)) for k in range(degree + 1))
    lo, hi = ft(lo), ft(hi)

    @inner(**HELPER_OPTIONS)
    def _exp(x):
        xc = x if x > lo else lo  # NaN -> lo: the integer path never sees NaN
        xc = xc if xc < hi else hi
        n = np.rint(xc * log2e)
        xr = x if x != x else xc  # ...but the polynomial does, so NaN propagates
        f = fmuladd(-n, ln2_lo, fmuladd(-n, ln2_hi, xr))
        p = c[degree]
        for k in range(degree - 1, -1, -1):
            p = fmuladd(p, f, c[k])
        a, b = _pow2_halves(n)
        return p * a * b

    return _exp


_exp32 = _make_exp(np.float32, 7, -104.0, 89.0)
_exp64 = _make_exp(np.float64, 13, -746.0, 710.0)


# exp for arguments <= 0 (a softmax's x - max, a BCE's -|x|), float32, about 3x
# cheaper than the general one: n is rounded by the 1.5 * 2**23 trick (the low bits
# of t are n, so 2**n is two integer operations away), e**f uses a degree-6
# polynomial fitted for relative error on [-ln2/2, ln2/2] (max 2e-8, below float32
# rounding), and 2**n is applied as 2**(n+64) * 2**-64 so that subnormal results
# round once, correctly. NaN propagates through f.
_EXP6 = (
    1.0000000005541962,
    1.000000036323054,
    0.49999992079355077,
    0.16666420170334445,
    0.0416682256734659,
    0.008374815771937216,
    0.0013836840172961476,
)


def _make_exp_nonpos32():
    ft = np.float32
    log2e, magic = ft(1.4426950408889634), ft(12582912.0)
    ln2_hi, ln2_lo = ft(_LN2_HI), ft(_LN2_LO)
    c = tuple(ft(v) for v in _EXP6)
    lo, zero = ft(-104.0), ft(0.0)  # exp(-104) is below half the smallest subnormal
    bias_bits = np.int32((127 + 64) << 23)
    two_m64 = ft(2.0**-64)

    @inner(**HELPER_OPTIONS)
    def _exp(x):
        xc = lo if x < lo else x  # NaN stays NaN
        t = fmuladd(xc, log2e, magic)
        n = t - magic  # rint(xc / ln2)
        f = fmuladd(-n, ln2_lo, fmuladd(-n, ln2_hi, xc))
        p = c[6]
        for k in range(5, -1, -1):
            p = fmuladd(p, f, c[k])
        r = p * _from_bits((_bits(t) << 23) + bias_bits, x) * two_m64
        return zero if x < lo else r

    return _exp


_exp_nonpos32 = _make_exp_nonpos32()


# --- log and log1p ------------------------------------------------------------
# x = 2**k * m with m in [sqrt(1/2), sqrt(2)), log(m) = 2 atanh(s), s = (m-1)/(m+1),
# |s| <= 0.1716, so the atanh series converges fast (5 / 10 terms after s).


def _make_atanh2(ft, coeffs):
    """2 atanh(s) = log((1+s)/(1-s)) = 2 s g(s**2), g a polynomial with ``coeffs``."""
    c = tuple(ft(v) for v in coeffs)
    deg = len(c) - 1
    two = ft(2.0)

    @inner(**HELPER_OPTIONS)
    def _f(s):
        z = s * s
        p = c[deg]
        for j in range(deg - 1, -1, -1):
            p = fmuladd(p, z, c[j])
        return two * s * p

    return _f


def _make_log(ft, ity, mant, nterms):
    mant_mask = ity((1 << mant) - 1)
    sqrt_half_bits = ity(0x3F3504F3) if ft is np.float32 else ity(0x3FE6A09E667F3BCD)
    tiny = ft(np.finfo(ft).tiny)
    scale_up = ft(2.0 ** (mant + 1))
    scale_k = ft(mant + 1)
    ln2 = ft(math.log(2.0))
    two, one, zero = ft(2.0), ft(1.0), ft(0.0)
    inf, nan = ft(np.inf), ft(np.nan)
    # |s| <= 0.1716 here: the series sum s**2k / (2k+1), truncated after nterms
    _atanh2 = _make_atanh2(ft, tuple(1.0 / (2 * j + 1) for j in range(nterms + 1)))

    @inner(**HELPER_OPTIONS)
    def _split(x):
        # x = 2**k * m, m in [sqrt(1/2), sqrt(2)), for normal positive x
        i = _bits(x) - sqrt_half_bits
        return ft(i >> mant), _from_bits((i & mant_mask) + sqrt_half_bits, x)

    @inner(**HELPER_OPTIONS)
    def _log(x):
        sub = x < tiny  # subnormal (or <= 0): scale into the normal range first
        k, m = _split(x * scale_up if sub else x)
        k = k - scale_k if sub else k
        r = fmuladd(k, ln2, _atanh2((m - one) / (m + one)))
        r = x if x == inf else r
        r = -inf if x == zero else r
        return r if x >= zero else nan  # negative or NaN

    @inner(**HELPER_OPTIONS)
    def _log1p(x):
        u = one + x
        k, m = _split(u)
        # u rounds 1 + x; err = x - (u - 1) is exactly what was lost. Adding it back
        # to m - 1 (scaled like m) keeps full relative accuracy for tiny x.
        err = x - (u - one)
        f = (m - one) + err * _pow2(-k)
        r = fmuladd(k, ln2, _atanh2(f / (two + f)))
        r = x if u == one else r  # |x| < eps/2: log1p(x) rounds to x (also subnormals)
        r = x if x == inf else r
        r = -inf if x == -one else r
        return r if x >= -one else nan

    return _log, _log1p


_log32, _log1p32 = _make_log(np.float32, np.int32, 23, 5)
_log64, _log1p64 = _make_log(np.float64, np.int64, 52, 10)


# 2 atanh(s) = log((1+s)/(1-s)) for 0 <= s <= 1/3, i.e. log1p(e) with s = e/(2+e),
# e in [0, 1]: 2 s g(s**2) with g(z) = sum z**k / (2k+1). float64 takes the series
# to where (1/9)**k/(2k+1) < half an ulp; float32 a degree-4 polynomial fitted for
# relative error on z in [0, 1/9] (max 8e-9).
_ATANH_F32 = (
    1.0000000039604688,
    0.33333157342518516,
    0.2001245507239207,
    0.13980302365152128,
    0.14089163010065703,
)
_atanh2_third32 = _make_atanh2(np.float32, _ATANH_F32)
_atanh2_third64 = _make_atanh2(np.float64, tuple(1.0 / (2 * j + 1) for j in range(18)))


# --- generic entry points -------------------------------------------------------


def _generic(name, f32, f64):
    def stub(x):
        raise NotImplementedError(f"fastmle._cpu.numerics.{name} is only callable from jitted code")

    stub.__name__ = name

    @overload(stub, jit_options=dict(HELPER_OPTIONS, **NO_WRAPPERS))
    def _ov(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return stub


exp = _generic("exp", _exp32, _exp64)
exp_nonpos = _generic("exp_nonpos", _exp_nonpos32, _exp64)
log = _generic("log", _log32, _log64)
log1p = _generic("log1p", _log1p32, _log1p64)
atanh2_third = _generic("atanh2_third", _atanh2_third32, _atanh2_third64)
