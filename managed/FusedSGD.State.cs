using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

// FusedSGD's per-parameter state, per-group options and param group.
public partial class FusedSGD
{
    /// <summary>
    /// Per-parameter state: the momentum buffer (null until the parameter's first step with momentum). For a
    /// float16 or bfloat16 parameter the buffer is float32, and with <c>master_weights</c>
    /// <see cref="master_param"/> holds its float32 master copy.
    /// </summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad, IRoundingStepState
    {
        /// <summary>The momentum buffer, shaped like the parameter; null before the first step.</summary>
        public Tensor? momentum_buffer;
        /// <summary>The float32 master copy of a float16 or bfloat16 parameter (<c>master_weights</c>), from its first step on.</summary>
        public Tensor? master_param;

        // The optimizer's stochastic-rounding step count, saved with a float16 or bfloat16 parameter's state.
        private long _roundingStep;

        /// <summary>Creates the state of one parameter.</summary>
        public State(Parameter parameter) : base(parameter)
        {
        }

        long IRoundingStepState.RoundingStep { get => _roundingStep; set => _roundingStep = value; }

        bool IRoundingStepState.CarriesRoundingStep => LowPrecision;

        /// <summary>Disposes the buffer and the master copy.</summary>
        public void Dispose() => Replace(null, null);

        /// <summary>Moves the buffer and the master copy to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            momentum_buffer = StateTensors.Move(momentum_buffer, device);
            master_param = StateTensors.Move(master_param, device);
        }

        // float16 and bfloat16 parameters: a float32 buffer, and a master copy in the saved state.
        private bool LowPrecision => TensorChecks.IsLowPrecision(_parameter.dtype);

        private ScalarType BufferType => TensorChecks.StateType(_parameter.dtype);

        /// <summary>Reads the state written by <see cref="SaveStateDict(BinaryWriter)"/> (TorchSharp's SGD format); nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">A tensor does not fit the parameter, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(FusedSGD)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        /// <summary>
        /// Writes the buffer (a flag, then the tensor), as TorchSharp's SGD does; for a float16 or bfloat16
        /// parameter, then a flag and the float32 master copy when there is one, and the optimizer's
        /// stochastic-rounding step count (an int64).
        /// </summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            SaveConditionalStateTensor(writer, momentum_buffer!);
            if (LowPrecision)
            {
                SaveConditionalStateTensor(writer, master_param!);
                writer.Write(_roundingStep);
            }
        }

        /// <summary>Copies the state of another <see cref="State"/>; nothing changes if it does not fit the parameter.</summary>
        public override void LoadStateDict(OptimizerState source)
        {
            using var staging = new Staging();
            var apply = CopyStaged(source, staging);
            staging.Commit();
            apply();
        }

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source, staging);

        private Action ReadStaged(StateReader r)
        {
            var buf = r.ReadOptionalTensor("momentum buffer", _parameter, BufferType);
            var master = LowPrecision ? r.ReadOptionalTensor("master_param", _parameter, ScalarType.Float32) : null;
            long rounding = LowPrecision ? r.ReadCount("the stochastic rounding step count") : 0;
            return () =>
            {
                Replace(buf, master);
                _roundingStep = rounding;
            };
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State other)
            {
                throw new ArgumentException($"Expected a FusedSGD.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            var buf = StateLoad.CopyTensor(other.momentum_buffer, _parameter, staging, nameof(FusedSGD), "momentum buffer", BufferType);
            var master = StateLoad.CopyTensor(other.master_param, _parameter, staging, nameof(FusedSGD), "master_param", ScalarType.Float32);
            long rounding = other._roundingStep;
            return () =>
            {
                Replace(buf, master);
                _roundingStep = rounding;
            };
        }

        private void Replace(Tensor? buf, Tensor? master)
        {
            momentum_buffer?.Dispose();
            master_param?.Dispose();
            (momentum_buffer, master_param) = (buf, master);
        }

        /// <summary>True when the buffers and the master copies are each absent in both or approximately equal.</summary>
        public override bool ApproximatelyEquals(OptimizerState other) =>
            other is State rhs && Close(momentum_buffer, rhs.momentum_buffer) && Close(master_param, rhs.master_param);

        private static bool Close(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && a.allclose(b);

        /// <summary>Clears the state: the next step starts momentum (and the master copy) afresh.</summary>
        public override void Initialize(OptimizerOptions options) => Replace(null, null);
    }

    /// <summary>Hyperparameters of a param group. Unset (null) values take the optimizer's defaults.</summary>
    public class Options : SgdOptionsBase
    {
    }

    /// <summary>A param group of <see cref="FusedSGD"/>, with optional per-group options.</summary>
    public class ParamGroup : SgdParamGroupBase<Options>
    {
        /// <summary>An empty group (set <c>Parameters</c> and <c>Options</c>).</summary>
        public ParamGroup()
        {
        }

        /// <summary>A group with explicit options (null fields take the optimizer's defaults).</summary>
        public ParamGroup(IEnumerable<Parameter> parameters, Options options) : base(parameters, options)
        {
        }

        /// <summary>A group; each option left null takes the optimizer's default.</summary>
        public ParamGroup(IEnumerable<Parameter> parameters, double? lr = null, double? momentum = null, double? dampening = null,
            double? weight_decay = null, bool? nesterov = null, bool? maximize = null)
            : base(parameters, lr, momentum, dampening, weight_decay, nesterov, maximize)
        {
        }
    }
}
