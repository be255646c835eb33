// The gate activations, accurate in float32: the same formulas as jaxlstm/cell.py (its
// `tanh` and `gate_activations`), so the native kernel and the XLA path agree to an ulp and
// both keep torch's accuracy on trained networks, whose gates saturate.
//
//   tanh(x)  = x + x u Q(u), u = x^2          for |x| < 0.625 (the polynomial of cell.py)
//            = sign(x) (1 - 2 t)              elsewhere, t = e / (1 + e), e = exp(-2|x|)
//   sigma(z) = 1/2 + 1/2 tanh(z/2)            for |z/2| < 0.625
//            = 1 - t above, t below           with t = sigma(-|z|): a nearly closed gate keeps
//                                             its relative precision
#pragma once

namespace jaxlstm {

template <class V>
struct Activations {
  using T = typename V::T;

  // exp(x) for x <= 0, within about an ulp; 0 below -104 (subnormal results near -87..-104
  // are rounded, not flushed).
  static T exp_nonpositive(T x) {
    x = V::max(V::set1(-104.0f), x);  // this order keeps a NaN
    const T n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
    // x - n ln2 in two parts (Cody and Waite): the first product is exact.
    T r = V::fnmadd(n, V::set1(0.693359375f), x);
    r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
    // exp(r) on |r| <= ln2/2 by its Taylor series to r^7 (truncation below 1e-8 relative).
    T p = V::set1(1.98412698e-4f);
    p = V::fmadd(p, r, V::set1(1.38888889e-3f));
    p = V::fmadd(p, r, V::set1(8.33333333e-3f));
    p = V::fmadd(p, r, V::set1(4.16666667e-2f));
    p = V::fmadd(p, r, V::set1(1.66666667e-1f));
    p = V::fmadd(p, r, V::set1(0.5f));
    p = V::fmadd(p, r, V::set1(1.0f));
    p = V::fmadd(p, r, V::set1(1.0f));
    // 2^n as two factors, each a normal number, so results down to the subnormals are right.
    const T half = V::round(V::mul(n, V::set1(0.5f)));
    return V::mul(V::mul(p, V::pow2(half)), V::pow2(V::sub(n, half)));
  }

  // t = sigma(-2a) = e / (1 + e), e = exp(-2a), for a = |y| >= 0.
  static T sigmoid_of_minus_2abs(T a) {
    const T e = exp_nonpositive(V::mul(V::set1(-2.0f), a));
    return V::div(e, V::add(V::set1(1.0f), e));
  }

  // tanh for |x| < 0.625: x + x u Q(u), coefficients as in cell.py's _TANH_Q.
  static T tanh_small(T x) {
    const T u = V::mul(x, x);
    T q = V::set1(-0.006104837171733379f);
    q = V::fmadd(q, u, V::set1(0.02100355364382267f));
    q = V::fmadd(q, u, V::set1(-0.05385247617959976f));
    q = V::fmadd(q, u, V::set1(0.13332782685756683f));
    q = V::fmadd(q, u, V::set1(-0.333333283662796f));
    return V::fmadd(x, V::mul(u, q), x);
  }

  static T tanh(T x) {
    const T a = V::abs(x);
    const T sign = V::copysign(V::set1(1.0f), x);
    const T t = sigmoid_of_minus_2abs(a);
    const T far = V::fnmadd(V::add(sign, sign), t, sign);  // sign - 2 sign t
    return V::select(V::lt(a, V::set1(0.625f)), tanh_small(x), far);
  }

  static T sigmoid(T z) {
    const T y = V::mul(z, V::set1(0.5f));
    const T a = V::abs(y);
    const T near = V::fmadd(V::set1(0.5f), tanh_small(y), V::set1(0.5f));
    const T t = sigmoid_of_minus_2abs(a);
    const T far = V::select(V::gt(y, V::zero()), V::sub(V::set1(1.0f), t), t);
    return V::select(V::lt(a, V::set1(0.625f)), near, far);
  }
};

}  // namespace jaxlstm
