// The one multi-tensor launcher of the CUDA kernels. The host splits every tensor into chunks of
// kChunk elements and packs them into tables passed as kernel arguments (no device copy): per
// tensor, Lists pointers, the element count and the optimizer's Meta; per block, its tensor and
// chunk. One block handles one chunk and hands it to the optimizer's functor, which loops over the
// chunk's elements with the per-element math of sgd_math.hpp / hd_math.hpp. A device no-op flag
// turns a launch into nothing (a skipped step). A new optimizer is one functor and one Meta.
#pragma once

#include "cuda_util.cuh"

#include <cstdint>
#include <vector>

namespace optim::cuda {

constexpr int kThreads = 512;         // threads per block
constexpr int64_t kChunk = 64 * 1024; // elements per block
constexpr int kMaxBlocks = 320;       // blocks per launch
// Elements a thread reads before it updates any of them (instruction-level parallelism): a block
// keeps kIlp times as many loads in flight as it has threads, which a chunk of 64 Ki elements on
// one block per SM needs to come near the memory's bandwidth (docs/design.md).
constexpr int kIlp = 4;
// A table's share of the 4 KiB of kernel arguments CUDA 11 allows (the functor and the no-op
// pointer take the rest).
constexpr size_t kTableBytes = 3800;

// The tensors of one launch and which chunk each block handles. Chunks are numbered across the
// launches of one call (first_block), so a reduction can write one record per chunk in a fixed
// order.
template <int Lists, class Meta>
struct TensorTable {
    static constexpr size_t kPerBlock = sizeof(unsigned char) + sizeof(int32_t);
    static constexpr size_t kPerTensor = Lists * sizeof(void*) + sizeof(int64_t) + sizeof(Meta);
    static constexpr int kFit =
        static_cast<int>((kTableBytes - kMaxBlocks * kPerBlock - 32) / kPerTensor);
    static constexpr int kMaxTensors = kFit < 255 ? kFit : 255; // block_tensor is one byte

    void* ptr[Lists][kMaxTensors];
    int64_t numel[kMaxTensors];
    Meta meta[kMaxTensors];
    unsigned char block_tensor[kMaxBlocks];
    int32_t block_chunk[kMaxBlocks];
    int64_t first_block;
    int32_t tensors; // host bookkeeping
    int32_t blocks;
};

// Calls update(i, read(i)) for this thread's elements of [begin, end), in the order of a loop
// over i = begin + threadIdx.x, stepping kThreads (so sums accumulate in that fixed order), but
// with the reads of kIlp elements issued before their updates. read returns an element's inputs
// (a value or a small struct); update computes and writes, or accumulates.
template <class Read, class Update>
__device__ __forceinline__ void for_each_element(int64_t begin, int64_t end, Read read,
                                                 Update update)
{
    using Inputs = decltype(read(begin));
    for (int64_t base = begin + threadIdx.x; base < end; base += int64_t{kThreads} * kIlp) {
        Inputs in[kIlp];
#pragma unroll
        for (int j = 0; j < kIlp; ++j) {
            const int64_t i = base + int64_t{j} * kThreads;
            if (i < end) in[j] = read(i);
        }
#pragma unroll
        for (int j = 0; j < kIlp; ++j) {
            const int64_t i = base + int64_t{j} * kThreads;
            if (i < end) update(i, in[j]);
        }
    }
}

// One block: its tensor t and the element range [begin, end) of it.
struct Chunk {
    int t;
    int64_t begin;
    int64_t end;
    int64_t index; // the chunk's number among all chunks of the call
};

template <class Table, class Functor>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_kernel(Table table, Functor functor, const int* noop)
{
    if (noop != nullptr && *noop != 0) return;
    const int t = table.block_tensor[blockIdx.x];
    const int64_t begin = static_cast<int64_t>(table.block_chunk[blockIdx.x]) * kChunk;
    const int64_t n = table.numel[t];
    functor(table, Chunk{t, begin, begin + kChunk < n ? begin + kChunk : n,
                         table.first_block + static_cast<int64_t>(blockIdx.x)});
}

// The chunk tables of one call, built once and launched by one or more functors (the reduction and
// the update pass share them). Per calling thread and reused, so a warm step allocates nothing.
template <int Lists, class Meta>
class TensorTables {
  public:
    using Table = TensorTable<Lists, Meta>;
    static_assert(sizeof(Table) <= kTableBytes, "kernel arguments are limited to 4 KiB");
    static_assert(Table::kMaxTensors >= 8, "Meta leaves too little room for tensors");

    static TensorTables& for_this_thread()
    {
        thread_local TensorTables tables;
        tables.tables_.clear();
        tables.chunks_ = 0;
        return tables;
    }

    // Appends every chunk of one tensor of n elements (none when n == 0).
    void add(void* const (&ptrs)[Lists], int64_t n, const Meta& meta)
    {
        const int64_t chunks = (n + kChunk - 1) / kChunk;
        for (int64_t ch = 0; ch < chunks; ++ch) {
            if (tables_.empty() || tables_.back().blocks == kMaxBlocks ||
                (ch == 0 && tables_.back().tensors == Table::kMaxTensors)) {
                tables_.emplace_back(); // zero-initialised
                tables_.back().first_block = chunks_;
            }
            Table& tb = tables_.back();
            // The tensor enters the table on its first chunk, and again in a new table.
            if (ch == 0 || tb.tensors == 0) {
                const int j = tb.tensors++;
                for (int l = 0; l < Lists; ++l) tb.ptr[l][j] = ptrs[l];
                tb.numel[j] = n;
                tb.meta[j] = meta;
            }
            tb.block_tensor[tb.blocks] = static_cast<unsigned char>(tb.tensors - 1);
            tb.block_chunk[tb.blocks] = static_cast<int32_t>(ch);
            ++tb.blocks;
            ++chunks_;
        }
    }

    int64_t chunks() const { return chunks_; }

    // Launches functor over every chunk on the active stream; each block returns at once when noop
    // (device memory, may be null) holds a nonzero value.
    template <class Functor>
    void launch(const Functor& functor, const int* noop, const char* fn, const char* what) const
    {
        static_assert(sizeof(Table) + sizeof(Functor) + sizeof(noop) <= 4000,
                      "kernel arguments are limited to 4 KiB");
        for (const Table& tb : tables_) {
            multi_tensor_kernel<Table, Functor>
                <<<tb.blocks, kThreads, 0, active_stream()>>>(tb, functor, noop);
            check(cudaGetLastError(), fn, what);
        }
    }

  private:
    std::vector<Table> tables_;
    int64_t chunks_ = 0;
};

} // namespace optim::cuda
