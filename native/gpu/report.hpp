// The check-and-report helper of optim_gpu_check (no GoogleTest): suites of named cases, each a
// series of comparisons with absolute and relative tolerances. The first mismatches of a case are
// printed; counts per suite go into the Markdown summary.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace optim_gpu {

struct Tolerance {
    double rtol;
    double atol;
};
constexpr Tolerance kExact{0.0, 0.0};

// |got - want| <= atol + rtol * |want|; a NaN matches only a NaN, an infinity only itself.
inline bool close_enough(double want, double got, Tolerance tol)
{
    if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
    if (want == got) return true;
    return std::fabs(got - want) <= tol.atol + tol.rtol * std::fabs(want);
}

class Report {
  public:
    // Cases until the next suite() are counted under `name`.
    void suite(const std::string& name)
    {
        Suite s;
        s.name = name;
        suites_.push_back(s);
        std::printf("\n== %s\n", name.c_str());
        std::fflush(stdout);
    }

    void begin_case(const std::string& name)
    {
        case_ = name;
        case_failed_ = false;
        case_shown_ = 0;
        case_values_ = 0;
        case_start_ = std::chrono::steady_clock::now();
    }

    void end_case()
    {
        Suite& s = suites_.back();
        if (case_failed_) {
            ++s.failed;
            s.failed_cases.push_back(case_);
        } else {
            ++s.passed;
        }
        s.values += case_values_;
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - case_start_).count();
        std::printf("%s %s (%lld values compared, %.2f s)\n", case_failed_ ? "FAIL" : "ok  ",
                    case_.c_str(), static_cast<long long>(case_values_), seconds);
        std::fflush(stdout);
    }

    bool case_failed() const { return case_failed_; }

    // Compares want[i] and got[i] for i < n; a mismatch fails the case.
    template <typename T>
    void close(const std::string& what, const T* want, const T* got, size_t n, Tolerance tol)
    {
        case_values_ += static_cast<int64_t>(n);
        int shown = 0;
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) {
            const double w = static_cast<double>(want[i]), g = static_cast<double>(got[i]);
            if (close_enough(w, g, tol)) continue;
            ++bad;
            if (shown < 3 && case_shown_ < kMaxShown) {
                show("%s [%zu]: expected %.17g, got %.17g (|diff| %.3g, allowed %.3g)",
                     what.c_str(), i, w, g, std::fabs(g - w), tol.atol + tol.rtol * std::fabs(w));
                ++shown;
            }
        }
        if (bad > 0) {
            if (bad > static_cast<size_t>(shown))
                show("%s: %zu of %zu values differ", what.c_str(), bad, n);
            case_failed_ = true;
        }
    }

    // Exact comparison of one value (a NaN matches a NaN).
    template <typename T>
    void same(const std::string& what, T want, T got)
    {
        close(what, &want, &got, 1, kExact);
    }

    void expect(bool ok, const std::string& what)
    {
        if (ok) return;
        show("expected: %s", what.c_str());
        case_failed_ = true;
    }

    // An error that ends the case (a failed CUDA or library call).
    void error(const std::string& message)
    {
        show("error: %s", message.c_str());
        case_failed_ = true;
    }

    int passed() const
    {
        int n = 0;
        for (const Suite& s : suites_) n += s.passed;
        return n;
    }
    int failed() const
    {
        int n = 0;
        for (const Suite& s : suites_) n += s.failed;
        return n;
    }

    // A table of the suites and the names of failed cases.
    std::string markdown() const
    {
        std::string md =
            "| suite | cases | passed | failed | values compared |\n|---|---:|---:|---:|---:|\n";
        for (const Suite& s : suites_)
            md += "| " + s.name + " | " + std::to_string(s.passed + s.failed) + " | " +
                  std::to_string(s.passed) + " | " + std::to_string(s.failed) + " | " +
                  std::to_string(s.values) + " |\n";
        for (const Suite& s : suites_)
            for (const std::string& c : s.failed_cases) md += "\n- FAILED: " + s.name + ": " + c;
        return md + "\n";
    }

  private:
    struct Suite {
        std::string name;
        int passed = 0;
        int failed = 0;
        int64_t values = 0;
        std::vector<std::string> failed_cases;
    };
    static constexpr int kMaxShown = 12; // mismatch lines per case

    template <typename... Args>
    void show(const char* format, Args... args)
    {
        if (case_shown_++ == kMaxShown) {
            std::printf("     (further mismatches of this case not shown)\n");
            return;
        }
        if (case_shown_ > kMaxShown) return;
        std::printf("     %s: ", case_.c_str());
        std::printf(format, args...);
        std::printf("\n");
    }

    std::vector<Suite> suites_;
    std::string case_;
    bool case_failed_ = false;
    int case_shown_ = 0;
    int64_t case_values_ = 0;
    std::chrono::steady_clock::time_point case_start_;
};

} // namespace optim_gpu
