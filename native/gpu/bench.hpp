// The step timings of optim_gpu_check (bench.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace optim_gpu {

struct BenchOptions {
    std::vector<int64_t> params = {1000000, 10000000, 100000000};
    std::vector<int64_t> tensors = {4, 1000};
    int rounds = 15;
    double goal = 0.85; // a step's share of its reference's speed at the largest size
};

// Times every step next to its reference at every size; fills `markdown` with the tables and the
// goal's verdicts. Returns 0 (a missed goal is a result, not a failure).
int run_bench(const BenchOptions& options, std::string& markdown);

} // namespace optim_gpu
