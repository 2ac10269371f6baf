// Timings of the CUDA steps through the C ABI, each next to the device's bandwidth reference for
// the same bytes (reference.cu), in float32: CUDA events on stream 0, interleaved rounds (every
// contender once per round, so that the device's drift hits all alike), medians.
#include "bench.hpp"

#include "device.hpp"
#include "reference.hpp"
#include "steps.hpp"

#include <optim.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace optim_gpu {

namespace {

// The tensors of one size: carved from one slab per array, each start aligned to 64 elements
// (256 bytes) as a caching allocator would, so that a reference pass can stream the same number
// of elements from the slab's start.
struct Layout {
    std::vector<int64_t> sizes, offsets;
    int64_t total = 0;
    int64_t slab = 0;

    Layout(int64_t params, int64_t tensors)
    {
        for (int64_t k = 0; k < tensors; ++k) {
            const int64_t n = params / tensors + (k < params % tensors ? 1 : 0);
            sizes.push_back(n);
            offsets.push_back(slab);
            total += n;
            slab += (n + 63) / 64 * 64;
        }
    }
};

struct Contender {
    std::string name;
    int bytes;     // per float32 element
    int reference; // index of the contender it is measured against, -1 for a reference
    std::function<void()> run;
};

std::string human(int64_t n)
{
    if (n % 1000000 == 0) return std::to_string(n / 1000000) + "M";
    if (n % 1000 == 0) return std::to_string(n / 1000) + "K";
    return std::to_string(n);
}

struct Row {
    int64_t params, tensors;
    std::string step;
    int bytes;
    double ms, reference_ms;
};

// Times every step and reference at one size; appends a row per step.
void bench_size(int64_t params, int64_t tensors, int rounds, std::vector<Row>& rows)
{
    const Layout layout(params, tensors);
    const auto count = static_cast<size_t>(tensors);
    DeviceBuffer<float> p(static_cast<size_t>(layout.slab)), g(p.size()), b(p.size()), u(p.size()),
        a(p.size());
    fill(OPTIM_DTYPE_FLOAT32, p.get(), layout.slab, 1.0);
    fill(OPTIM_DTYPE_FLOAT32, g.get(), layout.slab, 1e-3);
    fill(OPTIM_DTYPE_FLOAT32, b.get(), layout.slab, 0.0);
    fill(OPTIM_DTYPE_FLOAT32, u.get(), layout.slab, 0.0);
    fill(OPTIM_DTYPE_FLOAT32, a.get(), layout.slab, 1e-9);
    auto carve = [&](const DeviceBuffer<float>& slab) {
        std::vector<void*> out;
        for (size_t k = 0; k < count; ++k) out.push_back(slab.get() + layout.offsets[k]);
        return out;
    };
    std::vector<void*> pp = carve(p), gp = carve(g), bp = carve(b), up = carve(u), ap = carve(a);
    const std::vector<const void*> gc(gp.begin(), gp.end());
    const std::vector<int32_t> group(count, 0);
    const optim_tensor_list plain{tensors, pp.data(), gc.data(), nullptr, layout.sizes.data(),
                                  nullptr, nullptr};
    const optim_tensor_list with_buffers{
        tensors, pp.data(), gc.data(), bp.data(), layout.sizes.data(), nullptr, nullptr};
    optim_sgd_params sgd;
    optim_sgd_params_default(&sgd);
    sgd.lr = 1e-9;
    optim_sgd_params momentum = sgd;
    momentum.momentum = 0.9;
    optim_sgd_params nesterov = momentum;
    nesterov.nesterov = 1;
    nesterov.weight_decay = 1e-4;
    const optim_hd_tensors hd{tensors,   pp.data(),           gc.data(),    bp.data(), up.data(),
                              ap.data(), layout.sizes.data(), group.data(), nullptr};
    const std::vector<optim_hd_group> hd_groups = {{0.9, 0.0, 0.0, 0, 0}};
    auto hd_params = [](int32_t scope, int32_t rule, int32_t assume_finite) {
        optim_hd_params h{};
        h.hypergrad_lr = 1e-12;
        h.lr_min = 0.0;
        h.lr_max = 1.0;
        h.eps = 1e-12;
        h.scope = scope;
        h.rule = rule;
        h.assume_finite = assume_finite;
        return h;
    };
    DeviceBuffer<double> rates(count);
    {
        const std::vector<double> initial(count, 1e-9);
        rates.upload(initial.data());
    }
    DeviceBuffer<double> sink(1);

    auto sgd_run = [&](const optim_tensor_list& list, const optim_sgd_params& hp) {
        return [&list, hp] {
            optim_ok(sgd_step(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT32, list, hp), "optim_sgd_step");
        };
    };
    // AdamW (decoupled decay) over p and g with b and u as its moments, at step 10.
    const std::vector<int64_t> adam_steps(count, 10);
    const optim_adam_tensors adam{tensors,   pp.data(), gc.data(),           bp.data(),
                                  up.data(), nullptr,   layout.sizes.data(), adam_steps.data(),
                                  nullptr,   nullptr};
    optim_adam_params adamw;
    optim_adam_params_default(&adamw);
    adamw.lr = 1e-9;
    adamw.weight_decay = 1e-2;
    adamw.decoupled = 1;
    const std::vector<optim_adam_params> adam_groups = {adamw};
    auto adam_run = [&] {
        optim_ok(adam_step(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT32, adam, adam_groups),
                 "optim_adam_step");
    };
    auto hd_run = [&](optim_hd_params hp) {
        return [&, hp] {
            optim_ok(hd_step(OPTIM_DEVICE_CUDA, OPTIM_DTYPE_FLOAT32, hd, hd_groups, hp, rates.get(),
                             nullptr),
                     "optim_hd_step");
        };
    };
    // A reference pass over the slabs' first `total` elements: reads, then updated arrays.
    auto pass = [&](std::vector<const DeviceBuffer<float>*> reads,
                    std::vector<const DeviceBuffer<float>*> updates) {
        std::vector<const void*> r;
        std::vector<void*> w;
        for (auto* x : reads) r.push_back(x->get());
        for (auto* x : updates) w.push_back(x->get());
        return [&, r, w] {
            stream_pass(OPTIM_DTYPE_FLOAT32, r.data(), static_cast<int>(r.size()), w.data(),
                        static_cast<int>(w.size()), layout.total, 1e-9, sink.get());
        };
    };
    const auto r12 = pass({&g}, {&p});
    const auto r20 = pass({&g}, {&p, &b});
    const auto r8 = pass({&g, &b}, {});
    const auto r4 = pass({&g}, {});
    const auto r28 = pass({&g}, {&p, &b, &a});

    // Steps, each followed by the reference of its passes.
    const std::vector<Contender> contenders = {
        {"SGD", 12, 1, sgd_run(plain, sgd)},
        {"reference: 1 read + 1 update", 12, -1, r12},
        {"SGD momentum", 20, 3, sgd_run(with_buffers, momentum)},
        {"reference: 1 read + 2 updates", 20, -1, r20},
        {"SGD Nesterov, weight decay", 20, 3, sgd_run(with_buffers, nesterov)},
        {"HD global (momentum)", 28, 6,
         hd_run(hd_params(OPTIM_HD_SCOPE_GLOBAL, OPTIM_HD_RULE_ADDITIVE, 0))},
        {"reference: 2 reads; 1 read + 2 updates", 28, -1,
         [&] {
             r8();
             r20();
         }},
        {"HD per tensor, normalized (momentum)", 28, 6,
         hd_run(hd_params(OPTIM_HD_SCOPE_PER_TENSOR, OPTIM_HD_RULE_NORMALIZED, 0))},
        {"HD per parameter (momentum)", 32, 9,
         hd_run(hd_params(OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_RULE_ADDITIVE, 0))},
        {"reference: 1 read; 1 read + 3 updates", 32, -1,
         [&] {
             r4();
             r28();
         }},
        {"HD per parameter, assume_finite", 28, 11,
         hd_run(hd_params(OPTIM_HD_SCOPE_PER_PARAMETER, OPTIM_HD_RULE_ADDITIVE, 1))},
        {"reference: 1 read + 3 updates", 28, -1, r28},
        {"AdamW", 28, 11, adam_run},
    };

    cudaEvent_t start, stop;
    cuda_ok(cudaEventCreate(&start), "cudaEventCreate");
    cuda_ok(cudaEventCreate(&stop), "cudaEventCreate");
    std::vector<std::vector<double>> ms(contenders.size());
    for (int round = -2; round < rounds; ++round) { // two warm-up rounds
        for (size_t c = 0; c < contenders.size(); ++c) {
            // Samples of about 2 GB of traffic, so that short steps are timed over many calls.
            const double bytes = static_cast<double>(contenders[c].bytes) * params;
            const int reps = std::max(1, std::min(200, static_cast<int>(2e9 / bytes)));
            cuda_ok(cudaEventRecord(start, 0), "cudaEventRecord");
            for (int i = 0; i < reps; ++i) contenders[c].run();
            cuda_ok(cudaEventRecord(stop, 0), "cudaEventRecord");
            cuda_ok(cudaEventSynchronize(stop), "cudaEventSynchronize");
            float elapsed = 0;
            cuda_ok(cudaEventElapsedTime(&elapsed, start, stop), "cudaEventElapsedTime");
            if (round >= 0) ms[c].push_back(static_cast<double>(elapsed) / reps);
        }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::vector<double> median(contenders.size());
    for (size_t c = 0; c < contenders.size(); ++c) {
        std::sort(ms[c].begin(), ms[c].end());
        median[c] = ms[c][ms[c].size() / 2];
    }
    for (size_t c = 0; c < contenders.size(); ++c) {
        if (contenders[c].reference < 0) continue;
        rows.push_back({params, tensors, contenders[c].name, contenders[c].bytes, median[c],
                        median[static_cast<size_t>(contenders[c].reference)]});
    }
}

} // namespace

int run_bench(const BenchOptions& options, std::string& markdown)
{
    std::vector<Row> rows;
    for (int64_t params : options.params) {
        for (int64_t tensors : options.tensors) {
            std::printf("timing %s parameters in %lld tensors ...\n", human(params).c_str(),
                        static_cast<long long>(tensors));
            std::fflush(stdout);
            bench_size(params, tensors, options.rounds, rows);
        }
    }
    const int64_t goal_params = *std::max_element(options.params.begin(), options.params.end());
    char line[512];
    markdown =
        "Float32, median of " + std::to_string(options.rounds) +
        " interleaved rounds (CUDA events; short steps timed over many calls). The "
        "reference moves the same bytes per element as the step, pass for pass, with a "
        "grid-stride kernel of 16-byte accesses.\n\n"
        "| params | tensors | step | B/elem | step ms | step GB/s | reference ms | "
        "reference GB/s | step / reference |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
    int met = 0, goals = 0;
    std::string verdicts;
    for (const Row& r : rows) {
        const double gb = static_cast<double>(r.bytes) * static_cast<double>(r.params) / 1e9;
        const double ratio = r.reference_ms / r.ms;
        std::snprintf(
            line, sizeof line, "| %s | %lld | %s | %d | %.4f | %.0f | %.4f | %.0f | %.0f%% |\n",
            human(r.params).c_str(), static_cast<long long>(r.tensors), r.step.c_str(), r.bytes,
            r.ms, gb / (r.ms / 1e3), r.reference_ms, gb / (r.reference_ms / 1e3), 100.0 * ratio);
        markdown += line;
        if (r.params == goal_params) {
            ++goals;
            const bool ok = ratio >= options.goal;
            met += ok ? 1 : 0;
            std::snprintf(line, sizeof line, "- %s, %lld tensors: %.0f%% of the reference: %s\n",
                          r.step.c_str(), static_cast<long long>(r.tensors), 100.0 * ratio,
                          ok ? "met" : "MISSED");
            verdicts += line;
        }
    }
    std::snprintf(line, sizeof line,
                  "\nGoal: every step at %s parameters at least %.0f%% of its reference: met by %d "
                  "of %d.\n\n",
                  human(goal_params).c_str(), 100.0 * options.goal, met, goals);
    markdown += line + verdicts;
    std::printf("%s", markdown.c_str());
    return 0;
}

} // namespace optim_gpu
