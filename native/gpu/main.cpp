// optim_gpu_check: the CUDA path of the library verified on a GPU, through the C ABI alone.
//
//   optim_gpu_check info  [--markdown FILE]
//       The device, driver, runtime and library; fails without a device.
//   optim_gpu_check check [--quick] [--require-device] [--dry-run] [--markdown FILE]
//       Every CUDA kernel against the CPU path (checks.cpp). Without a device it exits with 77
//       (CTest's skip), or fails with --require-device. --quick: small sizes, for the sanitizers.
//       --dry-run: the CPU path checked against itself on host memory, proving the checks' own
//       logic where there is no GPU (it says so, and proves nothing about the kernels).
//   optim_gpu_check bench [--params 1M,10M,100M] [--tensors 4,1000] [--rounds 15] [--markdown FILE]
//       Step timings next to the device's bandwidth reference (bench.cpp).
//
// Exit codes: 0 passed, 1 failed, 2 bad usage, 77 skipped (no device).
#include "bench.hpp"
#include "checks.hpp"
#include "device.hpp"
#include "report.hpp"

#include <optim.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

using namespace optim_gpu;

namespace {

constexpr int kSkip = 77;

int usage(const char* problem)
{
    std::fprintf(stderr,
                 "optim_gpu_check: %s\nusage: optim_gpu_check info|check|bench [options] (see "
                 "native/gpu/main.cpp)\n",
                 problem);
    return 2;
}

// Empty when a device is usable, else why not.
std::string no_device_reason()
{
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return cudaGetErrorString(e);
    if (n == 0) return "the CUDA runtime reports no device";
    return "";
}

std::string version_text(int v)
{
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// "- key: value" lines on the device, driver, runtime and library.
std::string device_markdown()
{
    int device = 0;
    cuda_ok(cudaGetDevice(&device), "cudaGetDevice");
    cudaDeviceProp prop{};
    cuda_ok(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    int driver = 0, runtime = 0;
    cuda_ok(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
    cuda_ok(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
    char line[512];
    std::snprintf(line, sizeof line,
                  "- GPU %d: %s, compute capability %d.%d, %d SMs, %.1f GiB\n"
                  "- CUDA driver %s; runtime %s (static, as in the library)\n"
                  "- Library: %s\n",
                  device, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                  static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                  version_text(driver).c_str(), version_text(runtime).c_str(), optim_build_info());
    return line;
}

bool write_file(const std::string& path, const std::string& text)
{
    if (path.empty()) return true;
    std::ofstream out(path);
    out << text;
    if (!out) {
        std::fprintf(stderr, "optim_gpu_check: cannot write %s\n", path.c_str());
        return false;
    }
    return true;
}

// "1M,10M,100M" -> {1000000, 10000000, 100000000}; empty on a bad list.
std::vector<int64_t> parse_counts(const std::string& text)
{
    std::vector<int64_t> out;
    size_t at = 0;
    while (at <= text.size()) {
        const size_t end =
            text.find(',', at) == std::string::npos ? text.size() : text.find(',', at);
        const std::string item = text.substr(at, end - at);
        char* rest = nullptr;
        double v = std::strtod(item.c_str(), &rest);
        if (rest == item.c_str()) return {};
        if (*rest == 'K') v *= 1e3, ++rest;
        if (*rest == 'M') v *= 1e6, ++rest;
        if (*rest != '\0' || v < 1) return {};
        out.push_back(static_cast<int64_t>(v));
        at = end + 1;
    }
    return out;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2) return usage("no command");
    const std::string command = argv[1];
    std::string markdown_path;
    bool quick = false, require_device = false, dry_run = false;
    BenchOptions bench;
    for (int i = 2; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--markdown" && has_value) {
            markdown_path = argv[++i];
        } else if (arg == "--quick" && command == "check") {
            quick = true;
        } else if (arg == "--require-device" && command == "check") {
            require_device = true;
        } else if (arg == "--dry-run" && command == "check") {
            dry_run = true;
        } else if (arg == "--params" && has_value && command == "bench") {
            bench.params = parse_counts(argv[++i]);
            if (bench.params.empty()) return usage("bad --params list");
        } else if (arg == "--tensors" && has_value && command == "bench") {
            bench.tensors = parse_counts(argv[++i]);
            if (bench.tensors.empty()) return usage("bad --tensors list");
        } else if (arg == "--rounds" && has_value && command == "bench") {
            bench.rounds = std::atoi(argv[++i]);
            if (bench.rounds < 1) return usage("bad --rounds");
        } else {
            return usage(("unknown option " + arg + " for " + command).c_str());
        }
    }
    if (command != "info" && command != "check" && command != "bench")
        return usage(("unknown command " + command).c_str());
    for (int64_t p : bench.params)
        for (int64_t t : bench.tensors)
            if (t > p) return usage("more tensors than parameters");

    try {
        if (command == "check" && dry_run) {
            Target::set_dry_run(true);
            std::printf("optim_gpu_check check --dry-run: the CPU path checked against itself on "
                        "host memory; no GPU is involved and nothing is proven about the CUDA "
                        "kernels\n");
            Report report;
            run_checks(CheckOptions{quick}, report);
            std::printf("\ncheck (dry run): %d passed, %d failed\n", report.passed(),
                        report.failed());
            const std::string md = "DRY RUN on the CPU, not a GPU result.\n\n" + report.markdown();
            return write_file(markdown_path, md) && report.failed() == 0 ? 0 : 1;
        }

        const std::string reason = no_device_reason();
        if (!reason.empty()) {
            if (command == "check" && !require_device) {
                std::printf("optim_gpu_check: SKIPPED, no CUDA device (%s)\n", reason.c_str());
                return kSkip;
            }
            std::fprintf(stderr, "optim_gpu_check %s: FAILED, no CUDA device (%s)\n",
                         command.c_str(), reason.c_str());
            write_file(markdown_path, "FAILED: no CUDA device (" + reason + ")\n");
            return 1;
        }

        if (command == "info") {
            const std::string md = device_markdown();
            std::printf("%s", md.c_str());
            return write_file(markdown_path, md) ? 0 : 1;
        }
        if (command == "check") {
            std::printf("%s", device_markdown().c_str());
            Report report;
            run_checks(CheckOptions{quick}, report);
            std::printf("\ncheck%s: %d passed, %d failed\n", quick ? " (quick)" : "",
                        report.passed(), report.failed());
            return write_file(markdown_path, report.markdown()) && report.failed() == 0 ? 0 : 1;
        }
        std::string md;
        const int rc = run_bench(bench, md);
        return write_file(markdown_path, md) ? rc : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "optim_gpu_check %s: FAILED: %s\n", command.c_str(), e.what());
        return 1;
    }
}
