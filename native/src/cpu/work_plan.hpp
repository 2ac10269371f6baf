// A fixed partition of the concatenation of many tensors into chunks of kChunk elements. Chunk c
// covers elements [c*kChunk, (c+1)*kChunk) of the concatenation and may span several small tensors.
// The partition depends only on the tensor sizes, never on the number of threads, which is what
// makes chunked reductions reproducible.
#pragma once

#include "../error.hpp"
#include "thread_pool.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace optim::cpu {

// The element loops are compiled twice, for AVX2 and for the x86-64 baseline, and the better one is
// picked at load time (GCC function multiversioning). Without FMA the two give bitwise-identical
// results; the AVX2 one does twice the work per instruction where a loop is compute-bound (the
// double accumulation of the hypergradient reductions). Not under ThreadSanitizer: the clones'
// resolvers run while the library is relocated, before TSan's runtime is up, and crash there.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define OPTIM_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define OPTIM_CPU_CLONES
#endif

// Before a loop over arrays the caller guarantees distinct: GCC may vectorise it without proving
// that (it cannot through struct members, as ParamAccess's). Other compilers: nothing.
#if defined(__GNUC__) && !defined(__clang__)
#define OPTIM_DISTINCT_ARRAYS _Pragma("GCC ivdep")
#else
#define OPTIM_DISTINCT_ARRAYS
#endif

// 64 Ki elements: 256 KiB of fp32 per stream, large enough to amortise scheduling, small enough to
// balance two to a few dozen threads.
constexpr int64_t kChunk = int64_t(1) << 16;
// Below this many elements in one call the pool's wake-up costs more than it saves.
constexpr int64_t kParallelThreshold = int64_t(1) << 17;

// A tensor's part of one chunk: elements [begin, begin + length) of tensor `tensor`, the index-th
// piece of the call (pieces are numbered in chunk order, then tensor order).
struct Piece {
    int64_t index;
    int64_t tensor;
    int64_t begin;
    int64_t length;

    // The piece's part of array `data` of its tensor (one pointer per tensor).
    template <typename T, typename P>
    T* at(P* const* data) const
    {
        return static_cast<T*>(data[tensor]) + begin;
    }
};

class WorkPlan {
  public:
    // One plan per calling thread, reused so a step allocates nothing once warm.
    static WorkPlan& for_this_thread()
    {
        thread_local WorkPlan plan;
        return plan;
    }

    void build(const int64_t* numels, int64_t count)
    {
        offsets_.resize(static_cast<size_t>(count) + 1);
        int64_t total = 0;
        for (int64_t k = 0; k < count; ++k) {
            offsets_[static_cast<size_t>(k)] = total;
            total += numels[k];
        }
        offsets_[static_cast<size_t>(count)] = total;
        count_ = count;
        total_ = total;
        index_pieces();
    }

    int64_t total() const { return total_; }
    int64_t count() const { return count_; }

    int64_t pieces() const { return static_cast<int64_t>(piece_tensor_.size()); }
    int64_t piece_tensor(int64_t piece) const { return piece_tensor_[static_cast<size_t>(piece)]; }
    int64_t chunks() const { return (total_ + kChunk - 1) / kChunk; }

    // The one multi-tensor loop of the CPU path: fn(const Piece&) for every piece of every chunk,
    // each piece once. Each thread gets one contiguous run of chunks (sequential streams suit the
    // hardware prefetchers better than interleaved chunks, docs/design.md); small work runs
    // inline. The partition never depends on the thread count.
    template <class Fn>
    void parallel_for_pieces(Fn&& fn) const
    {
        const int64_t n = chunks();
        auto chunk = [&](int64_t c) {
            int64_t index = piece_start_[static_cast<size_t>(c)];
            for_each_piece(c, [&](int64_t k, int64_t begin, int64_t length) {
                fn(Piece{index++, k, begin, length});
            });
        };
        ThreadPool& pool = ThreadPool::instance();
        const int64_t blocks =
            total_ < kParallelThreshold ? 1 : std::min<int64_t>(n, pool.num_threads());
        if (blocks <= 1) {
            for (int64_t c = 0; c < n; ++c) chunk(c);
            return;
        }
        pool.parallel_for(blocks, [&](int64_t b) {
            for (int64_t c = n * b / blocks; c < n * (b + 1) / blocks; ++c) chunk(c);
        });
    }

  private:
    // Calls fn(tensor, begin, length) for each piece of a tensor inside chunk c, in tensor order.
    template <class Fn>
    void for_each_piece(int64_t c, Fn&& fn) const
    {
        const int64_t lo = c * kChunk;
        const int64_t hi = std::min(lo + kChunk, total_);
        // First tensor whose range ends after lo (skips empty tensors).
        auto it = std::upper_bound(offsets_.begin(), offsets_.begin() + count_ + 1, lo);
        int64_t k = static_cast<int64_t>(it - offsets_.begin()) - 1;
        for (; k < count_ && offsets_[static_cast<size_t>(k)] < hi; ++k) {
            const int64_t t0 = offsets_[static_cast<size_t>(k)];
            const int64_t t1 = offsets_[static_cast<size_t>(k) + 1];
            const int64_t b = std::max(lo, t0);
            const int64_t e = std::min(hi, t1);
            if (e > b) fn(k, b - t0, e - b);
        }
    }

    // Numbers every piece in chunk order, then tensor order, so that per-piece partial results can
    // be combined in a fixed order.
    void index_pieces()
    {
        const int64_t n = chunks();
        piece_start_.assign(static_cast<size_t>(n) + 1, 0);
        piece_tensor_.clear();
        for (int64_t c = 0; c < n; ++c) {
            piece_start_[static_cast<size_t>(c)] = static_cast<int64_t>(piece_tensor_.size());
            for_each_piece(c, [&](int64_t k, int64_t, int64_t) { piece_tensor_.push_back(k); });
        }
        piece_start_[static_cast<size_t>(n)] = static_cast<int64_t>(piece_tensor_.size());
    }

    std::vector<int64_t> offsets_;
    std::vector<int64_t> piece_start_;
    std::vector<int64_t> piece_tensor_;
    int64_t count_ = 0;
    int64_t total_ = 0;
};

} // namespace optim::cpu
