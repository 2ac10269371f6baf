// optim_native_bench: the native steps next to their bandwidth references, timed in interleaved
// rounds in one process (so the machine's drift hits every case alike), through the C ABI alone: no
// .NET, no TorchSharp, pointers gathered once. Comparing its ratios with the managed benchmarks'
// shows what the managed side of a step costs.
//
//   optim_native_bench [params=10000000] [tensors=4] [rounds=20]
//
// Threads: the library's own pool, or LibTorch's OpenMP team when its libgomp is preloaded
// (LD_PRELOAD=.../libgomp-98b21ff3.so.1), as in a TorchSharp process.
#include <optim.h>
#include <optim_bench.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Case {
    std::string name;
    int bytes;     // per fp32 element
    int reference; // index of the reference case it is compared with
    std::function<optim_status()> run;
};

std::vector<float*> arrays(int tensors, int64_t n, float value)
{
    std::vector<float*> out;
    for (int k = 0; k < tensors; ++k) {
        auto* a = static_cast<float*>(std::aligned_alloc(64, ((n * 4 + 63) / 64) * 64));
        std::fill(a, a + n, value);
        out.push_back(a);
    }
    return out;
}

} // namespace

int main(int argc, char** argv)
{
    const int64_t total = argc > 1 ? std::atoll(argv[1]) : 10000000;
    const int tensors = argc > 2 ? std::atoi(argv[2]) : 4;
    const int rounds = argc > 3 ? std::atoi(argv[3]) : 20;
    if (total < tensors || tensors < 1 || rounds < 1) {
        std::fprintf(stderr, "usage: optim_native_bench [params] [tensors] [rounds]\n");
        return 2;
    }
    const int64_t n = total / tensors;
    std::vector<float*> p = arrays(tensors, n, 1.0f), g = arrays(tensors, n, 1e-3f),
                        b = arrays(tensors, n, 0.0f), u = arrays(tensors, n, 0.0f),
                        r = arrays(tensors, n, 1e-6f);
    std::vector<void*> pp(p.begin(), p.end()), bp(b.begin(), b.end()), up(u.begin(), u.end()),
        rp(r.begin(), r.end());
    std::vector<const void*> gp(g.begin(), g.end());
    std::vector<int64_t> numels(static_cast<size_t>(tensors), n);
    std::vector<int32_t> group(static_cast<size_t>(tensors), 0);

    const optim_tensor_list list{tensors,       pp.data(), gp.data(), bp.data(),
                                 numels.data(), nullptr,   nullptr};
    optim_sgd_params sgd;
    optim_sgd_params_default(&sgd);
    sgd.lr = 1e-9;
    sgd.momentum = 0.9;
    const optim_hd_tensors hd{tensors,   pp.data(),     gp.data(),    bp.data(), up.data(),
                              rp.data(), numels.data(), group.data(), nullptr};
    const optim_hd_group hd_group{0.9, 0.0, 0.0, 0, 0};
    auto hd_params = [](int scope, int assume_finite) {
        return optim_hd_params{1e-12, 0.0,           1.0, 1e-12, scope, OPTIM_HD_RULE_ADDITIVE,
                               0,     assume_finite, 0};
    };
    std::vector<double> rate(1, 1e-9);
    double sink = 0;
    // Reference passes: read arrays and update arrays per tensor, tensor-major.
    auto pass = [&](std::vector<std::vector<float*>> reads,
                    std::vector<std::vector<float*>> updates) {
        auto rd = std::make_shared<std::vector<const void*>>();
        auto ud = std::make_shared<std::vector<void*>>();
        for (int k = 0; k < tensors; ++k) {
            for (auto& a : reads) rd->push_back(a[static_cast<size_t>(k)]);
            for (auto& a : updates) ud->push_back(a[static_cast<size_t>(k)]);
        }
        const int32_t nr = static_cast<int32_t>(reads.size()),
                      nu = static_cast<int32_t>(updates.size());
        return [&, rd, ud, nr, nu] {
            const optim_stream_tensors t{tensors, nr, nu, rd->data(), ud->data(), numels.data()};
            return optim_stream_reference(OPTIM_DTYPE_FLOAT32, &t, 1e-9, nu == 0 ? &sink : nullptr);
        };
    };
    auto ref_20 = pass({g}, {p, b});
    auto ref_28_read = pass({g, b}, {});
    auto ref_4 = pass({g}, {});
    auto ref_28 = pass({g}, {p, b, r});

    std::vector<Case> cases = {
        {"FusedSGD momentum", 20, 1,
         [&] { return optim_sgd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &list, 1, &sgd); }},
        {"reference: 1 read + 2 updates", 20, 1, ref_20},
        {"HD global", 28, 3,
         [&] {
             const auto hp = hd_params(OPTIM_HD_SCOPE_GLOBAL, 0);
             return optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &hd, 1, &hd_group, &hp,
                                  rate.data(), nullptr);
         }},
        {"reference: 2 reads; then 1 read + 2 updates", 28, 3,
         [&] {
             const optim_status s = ref_28_read();
             return s != OPTIM_STATUS_OK ? s : ref_20();
         }},
        {"HD per parameter", 32, 5,
         [&] {
             const auto hp = hd_params(OPTIM_HD_SCOPE_PER_PARAMETER, 0);
             return optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &hd, 1, &hd_group, &hp,
                                  nullptr, nullptr);
         }},
        {"reference: 1 read; then 1 read + 3 updates", 32, 5,
         [&] {
             const optim_status s = ref_4();
             return s != OPTIM_STATUS_OK ? s : ref_28();
         }},
        {"HD per parameter, assume_finite", 28, 7,
         [&] {
             const auto hp = hd_params(OPTIM_HD_SCOPE_PER_PARAMETER, 1);
             return optim_hd_step(OPTIM_DEVICE_CPU, 0, OPTIM_DTYPE_FLOAT32, &hd, 1, &hd_group, &hp,
                                  nullptr, nullptr);
         }},
        {"reference: 1 read + 3 updates", 28, 7, ref_28},
    };

    std::vector<std::vector<double>> ms(cases.size());
    for (int round = -2; round < rounds; ++round) // two warm-up rounds
        for (size_t c = 0; c < cases.size(); ++c) {
            const auto t0 = std::chrono::steady_clock::now();
            if (cases[c].run() != OPTIM_STATUS_OK) {
                std::fprintf(stderr, "%s: %s %s\n", cases[c].name.c_str(), optim_last_error(),
                             optim_bench_last_error());
                return 1;
            }
            const double t =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count();
            if (round >= 0) ms[c].push_back(t);
        }
    std::vector<double> median(cases.size());
    for (size_t c = 0; c < cases.size(); ++c) {
        std::sort(ms[c].begin(), ms[c].end());
        median[c] = ms[c][ms[c].size() / 2];
    }
    std::printf("# optim_native_bench %lld %d %d: %s; %s; median of %d interleaved rounds\n\n",
                static_cast<long long>(total), tensors, rounds, optim_build_info(),
                optim_threading_info(), rounds);
    std::printf("| step | B/element | ms | GB/s | of ref | vs FusedSGD "
                "|\n|---|---:|---:|---:|---:|---:|\n");
    for (size_t c = 0; c < cases.size(); ++c) {
        const double gbps = static_cast<double>(total) * cases[c].bytes / (median[c] * 1e6);
        std::printf("| %s | %d | %.3f | %.1f | %.0f%% | %.2fx |\n", cases[c].name.c_str(),
                    cases[c].bytes, median[c], gbps,
                    100.0 * median[static_cast<size_t>(cases[c].reference)] / median[c],
                    median[c] / median[0]);
    }
    for (auto* set : {&p, &g, &b, &u, &r})
        for (float* a : *set) std::free(a);
    return sink == 12345.0 ? 3 : 0; // keeps the read-only passes' sums alive
}
