// Naive references of PyTorch's SGD and of Adam's moment update, written as torch/optim spells them
// out (separate passes over a gradient copy), deliberately not sharing code with the library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace optim_test {

struct SgdConfig {
    double lr = 0.01;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
    bool maximize = false;
};

template <typename T>
struct TensorState {
    std::vector<T> param, grad, buf;
    bool has_buf = false;
};

template <typename T>
void reference_sgd_step(TensorState<T>& s, const SgdConfig& cfg)
{
    const size_t n = s.param.size();
    std::vector<T> g(s.grad);
    if (cfg.maximize)
        for (auto& v : g) v = -v;
    if (cfg.weight_decay != 0)
        for (size_t i = 0; i < n; ++i) g[i] = g[i] + static_cast<T>(cfg.weight_decay) * s.param[i];
    if (cfg.momentum != 0) {
        if (!s.has_buf) {
            s.buf = g;
            s.has_buf = true;
        } else {
            for (size_t i = 0; i < n; ++i) s.buf[i] = static_cast<T>(cfg.momentum) * s.buf[i];
            for (size_t i = 0; i < n; ++i)
                s.buf[i] = s.buf[i] + static_cast<T>(1 - cfg.dampening) * g[i];
        }
        if (cfg.nesterov)
            for (size_t i = 0; i < n; ++i) g[i] = g[i] + static_cast<T>(cfg.momentum) * s.buf[i];
        else
            g = s.buf;
    }
    for (size_t i = 0; i < n; ++i) s.param[i] = s.param[i] - static_cast<T>(cfg.lr) * g[i];
}

template <typename T>
std::vector<T> random_vector(size_t n, std::mt19937_64& rng, double scale = 1.0)
{
    std::normal_distribution<double> dist(0.0, scale);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(dist(rng));
    return v;
}

// Whether two arrays hold the same bits (memcmp on empty vectors would pass it null pointers).
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b)
{
    return a.size() == b.size() &&
           (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// PyTorch's _single_tensor_adam after its gradient is formed (g: after maximize and Adam's coupled
// weight decay), one operation per pass: the moments m and v (and vmax with amsgrad) advance to
// step `step`; returns the denominator sqrt(second moment) / sqrt(1 - beta2^step) + eps, and bc1
// = 1 - beta1^step.
template <typename T>
std::vector<T> reference_adam_moments(std::vector<T>& m, std::vector<T>& v, std::vector<T>& vmax,
                                      const std::vector<T>& g, double beta1, double beta2,
                                      double eps, bool amsgrad, int64_t step, double& bc1)
{
    const size_t n = g.size();
    const T w = static_cast<T>(1 - beta1);
    for (size_t i = 0; i < n; ++i) // torch.lerp
        m[i] = w < T(0.5) ? m[i] + w * (g[i] - m[i]) : g[i] - (g[i] - m[i]) * (T(1) - w);
    for (size_t i = 0; i < n; ++i) v[i] = v[i] * static_cast<T>(beta2);
    for (size_t i = 0; i < n; ++i) v[i] = v[i] + static_cast<T>(1 - beta2) * g[i] * g[i];
    bc1 = 1 - std::pow(beta1, static_cast<double>(step));
    const double bc2 = 1 - std::pow(beta2, static_cast<double>(step));
    const std::vector<T>* second = &v;
    if (amsgrad) {
        for (size_t i = 0; i < n; ++i) vmax[i] = std::max(vmax[i], v[i]);
        second = &vmax;
    }
    std::vector<T> denom(n);
    for (size_t i = 0; i < n; ++i) denom[i] = std::sqrt((*second)[i]);
    for (size_t i = 0; i < n; ++i) denom[i] = denom[i] / static_cast<T>(std::sqrt(bc2));
    for (size_t i = 0; i < n; ++i) denom[i] = denom[i] + static_cast<T>(eps);
    return denom;
}

} // namespace optim_test
