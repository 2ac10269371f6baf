using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

// FusedSGD's per-parameter state, per-group options and param group.
public partial class FusedSGD
{
    /// <summary>Per-parameter state: the momentum buffer (null until the parameter's first step with momentum).</summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad
    {
        /// <summary>The momentum buffer, shaped like the parameter; null before the first step.</summary>
        public Tensor? momentum_buffer;

        /// <summary>Creates the state of one parameter.</summary>
        public State(Parameter parameter) : base(parameter)
        {
        }

        /// <summary>Disposes the buffer.</summary>
        public void Dispose()
        {
            momentum_buffer?.Dispose();
            momentum_buffer = null;
        }

        /// <summary>Moves the buffer to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            if (momentum_buffer is not null)
            {
                var moved = momentum_buffer.to(device).DetachFromDisposeScope();
                if (!ReferenceEquals(moved, momentum_buffer))
                {
                    momentum_buffer.Dispose();
                }
                momentum_buffer = moved;
            }
        }

        /// <summary>Reads the buffer written by <see cref="SaveStateDict(BinaryWriter)"/> (TorchSharp's SGD format); nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">The buffer does not fit the parameter, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(FusedSGD)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        /// <summary>Writes the buffer (a flag, then the tensor), as TorchSharp's SGD does.</summary>
        public override void SaveStateDict(BinaryWriter writer) => SaveConditionalStateTensor(writer, momentum_buffer!);

        /// <summary>Copies the buffer of another <see cref="State"/>; nothing changes if it does not fit the parameter.</summary>
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
            var buf = r.ReadOptionalTensor("momentum buffer", _parameter);
            return () => Replace(buf);
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State other)
            {
                throw new ArgumentException($"Expected a FusedSGD.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            var buf = StateLoad.CopyTensor(other.momentum_buffer, _parameter, staging, nameof(FusedSGD), "momentum buffer");
            return () => Replace(buf);
        }

        private void Replace(Tensor? buf)
        {
            momentum_buffer?.Dispose();
            momentum_buffer = buf;
        }

        /// <summary>True when both buffers are absent or approximately equal.</summary>
        public override bool ApproximatelyEquals(OptimizerState other) =>
            other is State rhs && (momentum_buffer is null ? rhs.momentum_buffer is null
                : rhs.momentum_buffer is not null && momentum_buffer.allclose(rhs.momentum_buffer));

        /// <summary>Clears the buffer: the next step starts momentum afresh.</summary>
        public override void Initialize(OptimizerOptions options)
        {
            momentum_buffer?.Dispose();
            momentum_buffer = null;
        }
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
