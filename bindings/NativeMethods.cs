using System.Runtime.InteropServices;

namespace Optim.Interop;

/// <summary>
/// The raw imports of <c>native/include/optim.h</c>. Private to the bindings: callers use
/// <see cref="OptimNative"/>, which validates spans, checks the ABI once and turns statuses into
/// exceptions. Signatures are blittable only (fixed-size integers, doubles, pointers).
/// </summary>
internal static unsafe partial class NativeMethods
{
    internal const string Library = "Optim.Native";

    [LibraryImport(Library)]
    internal static partial int optim_abi_version();

    [LibraryImport(Library)]
    internal static partial byte* optim_build_info();

    [LibraryImport(Library)]
    internal static partial byte* optim_last_error();

    [LibraryImport(Library)]
    internal static partial int optim_cuda_compiled();

    [LibraryImport(Library)]
    internal static partial int optim_cuda_device_count(int* count);

    [LibraryImport(Library)]
    internal static partial int optim_cuda_set_stream(int deviceIndex, nint stream);

    [LibraryImport(Library)]
    internal static partial int optim_cuda_get_stream(int deviceIndex, nint* stream);

    [LibraryImport(Library)]
    internal static partial int optim_torch_cuda_stream(int deviceIndex, nint* stream);

    [LibraryImport(Library)]
    internal static partial int optim_set_num_threads(int n);

    [LibraryImport(Library)]
    internal static partial int optim_get_num_threads();

    [LibraryImport(Library)]
    internal static partial byte* optim_threading_info();

    [LibraryImport(Library)]
    internal static partial int optim_sgd_step(int device, int deviceIndex, int dtype, TensorList* tensors, int nGroups, SgdGroupParams* groups);

    [LibraryImport(Library)]
    internal static partial int optim_adam_step(int device, int deviceIndex, int dtype, AdamTensors* tensors, int nGroups, AdamGroupParams* groups);

    [LibraryImport(Library)]
    internal static partial int optim_sgd_step_clipped(int device, int deviceIndex, int dtype, TensorList* tensors, int nGroups, SgdGroupParams* groups,
        GradClip* clip);

    [LibraryImport(Library)]
    internal static partial int optim_adam_step_clipped(int device, int deviceIndex, int dtype, AdamTensors* tensors, int nGroups, AdamGroupParams* groups,
        GradClip* clip);

    [LibraryImport(Library)]
    internal static partial int optim_sgd_step_scaled(int device, int deviceIndex, int dtype, TensorList* tensors, int nGroups, SgdGroupParams* groups,
        GradClip* clip, GradScale* scale);

    [LibraryImport(Library)]
    internal static partial int optim_adam_step_scaled(int device, int deviceIndex, int dtype, AdamTensors* tensors, int nGroups, AdamGroupParams* groups,
        GradClip* clip, GradScale* scale);

    [LibraryImport(Library)]
    internal static partial int optim_sgd_step_mixed(int device, int deviceIndex, int dtype, TensorList* tensors, int nGroups, SgdGroupParams* groups,
        GradClip* clip, PrecisionOptions* precision);

    [LibraryImport(Library)]
    internal static partial int optim_adam_step_mixed(int device, int deviceIndex, int dtype, AdamTensors* tensors, int nGroups, AdamGroupParams* groups,
        GradClip* clip, PrecisionOptions* precision);

    [LibraryImport(Library)]
    internal static partial int optim_sgd_step_mixed_scaled(int device, int deviceIndex, int dtype, TensorList* tensors, int nGroups,
        SgdGroupParams* groups, GradClip* clip, GradScale* scale, PrecisionOptions* precision);

    [LibraryImport(Library)]
    internal static partial int optim_adam_step_mixed_scaled(int device, int deviceIndex, int dtype, AdamTensors* tensors, int nGroups,
        AdamGroupParams* groups, GradClip* clip, GradScale* scale, PrecisionOptions* precision);

    [LibraryImport(Library)]
    internal static partial int optim_sls_save(int device, int deviceIndex, int dtype, SlsTensors* tensors);

    [LibraryImport(Library)]
    internal static partial int optim_sls_trial(int device, int deviceIndex, int dtype, SlsTensors* tensors, double stepSize);

    [LibraryImport(Library)]
    internal static partial int optim_sls_restore(int device, int deviceIndex, int dtype, SlsTensors* tensors);

    [LibraryImport(Library)]
    internal static partial int optim_sls_grad_norm_sq(int device, int deviceIndex, int dtype, SlsTensors* tensors, double* result);

    [LibraryImport(Library)]
    internal static partial int optim_greedylr_init(GreedyLRConfig* config, GreedyLRCounters* state);

    [LibraryImport(Library)]
    internal static partial int optim_greedylr_step(int device, int deviceIndex, GreedyLRConfig* config, GreedyLRCounters* state,
        GreedyLRBuffers* buffers, void* metric, int metricDtype);

    [LibraryImport(Library)]
    internal static partial int optim_hd_step(int device, int deviceIndex, int dtype, HdTensors* tensors, int nGroups,
        HdGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped);

    [LibraryImport(Library)]
    internal static partial int optim_hd_step_clipped(int device, int deviceIndex, int dtype, HdTensors* tensors, int nGroups,
        HdGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped, GradClip* clip);

    [LibraryImport(Library)]
    internal static partial int optim_hd_step_scaled(int device, int deviceIndex, int dtype, HdTensors* tensors, int nGroups,
        HdGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped, GradClip* clip, GradScale* scale);

    [LibraryImport(Library)]
    internal static partial int optim_hd_adam_step(int device, int deviceIndex, int dtype, HdAdamTensors* tensors, int nGroups,
        HdAdamGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped);

    [LibraryImport(Library)]
    internal static partial int optim_hd_adam_step_clipped(int device, int deviceIndex, int dtype, HdAdamTensors* tensors, int nGroups,
        HdAdamGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped, GradClip* clip);

    [LibraryImport(Library)]
    internal static partial int optim_hd_step_mixed(int device, int deviceIndex, int dtype, HdTensors* tensors, int nGroups,
        HdGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped, GradClip* clip, PrecisionOptions* precision);

    [LibraryImport(Library)]
    internal static partial int optim_hd_adam_step_mixed(int device, int deviceIndex, int dtype, HdAdamTensors* tensors, int nGroups,
        HdAdamGroupOptions* groups, HdStepOptions* options, double* rates, long* skipped, GradClip* clip, PrecisionOptions* precision);

    [LibraryImport(Library)]
    internal static partial long optim_hd_rate_count(int scope, int nGroups, long nTensors);

    [LibraryImport(Library)]
    internal static partial int optim_torch_bump_versions(nint* tensors, long count);

    [LibraryImport(Library)]
    internal static partial int optim_torch_gradients(nint* tensors, long count, nint* grads);

    // Runs before the first import is called: every import of this assembly goes through the resolver.
    static NativeMethods() => NativeLibraryResolver.Register();
}

/// <summary>Mirror of <c>optim_grad_clip</c>: clipping by global norm inside a step.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct GradClip
{
    public double MaxNorm;
    public double* TotalNorm;
    /// <summary>1: the squared norm is summed over every rank of the MPI job (sharded state).</summary>
    public int AcrossRanks;
}

/// <summary>Mirror of <c>optim_grad_scale</c>: a gradient scaler's inverse scale and found-inf flag, read by a step.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct GradScale
{
    public float* InvScale;
    public float* FoundInf;
}

/// <summary>Mirror of <c>optim_precision</c>: master weights and rounding of 16-bit parameters.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct PrecisionOptions
{
    public nint* MasterParams;
    public long Seed;
    public long Step;
    public int Rounding;
}

/// <summary>Mirror of <c>optim_tensor_list</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct TensorList
{
    public long Count;
    public nint* Params;
    public nint* Grads;
    public nint* MomentumBuffers;
    public long* Numels;
    public byte* BufferFresh;
    public int* GroupIndex;
}

/// <summary>Mirror of <c>optim_adam_tensors</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct AdamTensors
{
    public long Count;
    public nint* Params;
    public nint* Grads;
    public nint* ExpAvgs;
    public nint* ExpAvgSqs;
    public nint* MaxExpAvgSqs;
    public long* Numels;
    public long* Steps;
    public int* GroupIndex;
    public nint* StepCounts;
}

/// <summary>Mirror of <c>optim_sls_tensors</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SlsTensors
{
    public long Count;
    public nint* Params;
    public nint* Origins;
    public nint* Grads;
    public long* Numels;
}

/// <summary>Mirror of <c>optim_greedylr_buffers</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct GreedyLRBuffers
{
    public double* Rates;
    public double* InitialRates;
    public double* MinLr;
    public double* MaxLr;
    public double* Window;
}

/// <summary>Mirror of <c>optim_hd_group</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct HdGroupOptions
{
    /// <summary>Momentum factor.</summary>
    public double Momentum;
    /// <summary>Dampening for momentum.</summary>
    public double Dampening;
    /// <summary>Weight decay (coupled L2).</summary>
    public double WeightDecay;
    /// <summary>1 for Nesterov momentum.</summary>
    public int Nesterov;
    /// <summary>1 to maximize.</summary>
    public int Maximize;
}

/// <summary>Mirror of <c>optim_hd_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct HdStepOptions
{
    /// <summary>The hypergradient learning rate β (≥ 0).</summary>
    public double HypergradLr;
    /// <summary>Lower bound of every rate.</summary>
    public double LrMin;
    /// <summary>Upper bound of every rate.</summary>
    public double LrMax;
    /// <summary>Guard of the normalized rule (&gt; 0).</summary>
    public double Eps;
    /// <summary>0 global, 1 per group, 2 per tensor, 3 per parameter.</summary>
    public int Scope;
    /// <summary>0 additive, 1 normalized.</summary>
    public int Rule;
    /// <summary>Nonzero on the optimizer's first step (rates are not updated).</summary>
    public int FirstStep;
    /// <summary>1: the caller has checked the gradients; no step is skipped and no finiteness pass is made.</summary>
    public int AssumeFinite;
    /// <summary>1: the step's sums (scalar scopes, non-finite count, norm) are summed over every rank of the MPI job.</summary>
    public int AcrossRanks;
}

/// <summary>Mirror of <c>optim_hd_tensors</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct HdTensors
{
    public long Count;
    public nint* Params;
    public nint* Grads;
    public nint* MomentumBuffers;
    public nint* PrevUpdates;
    public nint* ParamRates;
    public long* Numels;
    public int* GroupIndex;
    public byte* BufferFresh;
}

/// <summary>Mirror of <c>optim_hd_adam_group</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct HdAdamGroupOptions
{
    /// <summary>Coefficient of the running average of the gradient.</summary>
    public double Beta1;
    /// <summary>Coefficient of the running average of the squared gradient.</summary>
    public double Beta2;
    /// <summary>Term added to the denominator.</summary>
    public double Eps;
    /// <summary>Weight decay (coupled L2).</summary>
    public double WeightDecay;
    /// <summary>1 for AMSGrad.</summary>
    public int Amsgrad;
    /// <summary>1 to maximize.</summary>
    public int Maximize;
}

/// <summary>Mirror of <c>optim_hd_adam_tensors</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct HdAdamTensors
{
    public long Count;
    public nint* Params;
    public nint* Grads;
    public nint* ExpAvgs;
    public nint* ExpAvgSqs;
    public nint* MaxExpAvgSqs;
    public nint* PrevUpdates;
    public nint* ParamRates;
    public long* Numels;
    public long* Steps;
    public int* GroupIndex;
    /// <summary>Null (the step numbers are <see cref="Steps"/>), or the addresses of each tensor's count of steps taken.</summary>
    public nint* StepCounts;
}
