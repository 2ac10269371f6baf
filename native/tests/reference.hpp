// A naive reference of PyTorch's SGD, written as PyTorch's torch/optim/sgd.py spells it out
// (separate passes over a gradient copy), deliberately not sharing code with the library.
#pragma once

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

} // namespace optim_test
