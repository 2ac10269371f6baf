using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

// HypergradientSGD's per-parameter state, per-group options (with the step counters) and param group.
public partial class HypergradientSGD
{
    /// <summary>
    /// Per-parameter state. For a float16 or bfloat16 parameter the tensors are float32, and with
    /// <c>master_weights</c> <see cref="master_param"/> holds its float32 master copy.
    /// </summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad, IHypergradientState, IRoundingStepState
    {
        /// <summary>The scope of the optimizer this state belongs to (what a loaded state must hold).</summary>
        internal HypergradientScope Scope { get; init; }

        /// <summary>The momentum buffer (heavy-ball momentum: also the previous update direction).</summary>
        public Tensor? momentum_buffer;
        /// <summary>The previous update direction, kept when there is no momentum or with Nesterov.</summary>
        public Tensor? prev_update;
        /// <summary>The per-parameter scope's rates, shaped like the parameter.</summary>
        public Tensor? parameter_rates;
        /// <summary>The per-tensor scope's rate of this tensor.</summary>
        public double tensor_rate;
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

        // float16 and bfloat16 parameters: float32 tensors, and a master copy in the saved state.
        private bool LowPrecision => TensorChecks.IsLowPrecision(_parameter.dtype);

        private ScalarType StateType => TensorChecks.StateType(_parameter.dtype);

        double IHypergradientState.TensorRate { get => tensor_rate; set => tensor_rate = value; }

        Tensor? IHypergradientState.ParameterRates => parameter_rates;

        /// <summary>Disposes the tensors.</summary>
        public void Dispose()
        {
            momentum_buffer?.Dispose();
            prev_update?.Dispose();
            parameter_rates?.Dispose();
            master_param?.Dispose();
            momentum_buffer = prev_update = parameter_rates = master_param = null;
        }

        /// <summary>Moves the tensors to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            momentum_buffer = StateTensors.Move(momentum_buffer, device);
            prev_update = StateTensors.Move(prev_update, device);
            parameter_rates = StateTensors.Move(parameter_rates, device);
            master_param = StateTensors.Move(master_param, device);
        }

        /// <summary>Reads the state written by <see cref="SaveStateDict(BinaryWriter)"/>; nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">A tensor does not fit the parameter, a rate is invalid, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(HypergradientSGD)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source, staging);

        private Action ReadStaged(StateReader r)
        {
            var b = r.ReadOptionalTensor("momentum buffer", _parameter, StateType);
            var u = r.ReadOptionalTensor("previous update", _parameter, StateType);
            var rates = r.ReadOptionalTensor("per-parameter rates", _parameter, StateType);
            double rate = r.ReadNonNegative("per-tensor rate");
            HypergradientStateRules.CheckRates(Scope, rates, r.Invalid);
            if (rates is not null)
            {
                r.RequireNonNegative(rates, "per-parameter rates");
            }
            var master = LowPrecision ? r.ReadOptionalTensor("master_param", _parameter, ScalarType.Float32) : null;
            long rounding = LowPrecision ? r.ReadCount("the stochastic rounding step count") : 0;
            return () =>
            {
                Replace(b, u, rates, rate, master);
                _roundingStep = rounding;
            };
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State o)
            {
                throw new ArgumentException($"Expected a HypergradientSGD.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            const string owner = nameof(HypergradientSGD);
            var b = StateLoad.CopyTensor(o.momentum_buffer, _parameter, staging, owner, "momentum buffer", StateType);
            var u = StateLoad.CopyTensor(o.prev_update, _parameter, staging, owner, "previous update", StateType);
            var rates = StateLoad.CopyTensor(o.parameter_rates, _parameter, staging, owner, "per-parameter rates", StateType);
            var master = StateLoad.CopyTensor(o.master_param, _parameter, staging, owner, "master_param", ScalarType.Float32);
            double rate = HypergradientStateRules.CopiedTensorRate(o.tensor_rate, owner);
            HypergradientStateRules.CheckRates(Scope, rates, m => new ArgumentException($"{owner}: {m}", nameof(source)));
            long rounding = o._roundingStep;
            return () =>
            {
                Replace(b, u, rates, rate, master);
                _roundingStep = rounding;
            };
        }

        private void Replace(Tensor? b, Tensor? u, Tensor? rates, double rate, Tensor? master)
        {
            Dispose();
            (momentum_buffer, prev_update, parameter_rates, tensor_rate, master_param) = (b, u, rates, rate, master);
        }

        /// <summary>
        /// Writes the buffers, the rates and the per-tensor rate; for a float16 or bfloat16 parameter, then a
        /// flag and the float32 master copy when there is one, and the optimizer's stochastic-rounding step
        /// count (an int64).
        /// </summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            SaveConditionalStateTensor(writer, momentum_buffer!);
            SaveConditionalStateTensor(writer, prev_update!);
            SaveConditionalStateTensor(writer, parameter_rates!);
            writer.Write(tensor_rate);
            if (LowPrecision)
            {
                SaveConditionalStateTensor(writer, master_param!);
                writer.Write(_roundingStep);
            }
        }

        /// <summary>Copies another <see cref="State"/>; nothing changes if it does not fit the parameter.</summary>
        public override void LoadStateDict(OptimizerState source)
        {
            using var staging = new Staging();
            var apply = CopyStaged(source, staging);
            staging.Commit();
            apply();
        }

        /// <summary>Approximate equality of every tensor and the per-tensor rate.</summary>
        public override bool ApproximatelyEquals(OptimizerState other)
        {
            static bool Eq(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && a.allclose(b);
            return other is State o && Eq(momentum_buffer, o.momentum_buffer) && Eq(prev_update, o.prev_update) &&
                Eq(parameter_rates, o.parameter_rates) && tensor_rate == o.tensor_rate && Eq(master_param, o.master_param);
        }

        /// <summary>Clears the buffers and the master copy (the rates are kept).</summary>
        public override void Initialize(OptimizerOptions options)
        {
            momentum_buffer?.Dispose();
            prev_update?.Dispose();
            master_param?.Dispose();
            momentum_buffer = prev_update = master_param = null;
        }
    }

    /// <summary>Options of a param group; null values take the optimizer's defaults. Also carries the
    /// optimizer's step and skipped counts through <c>state_dict</c>.</summary>
    public class Options : SgdOptionsBase, IHypergradientOptions
    {
        SavedStepCounts IHypergradientOptions.Counts { get; set; }

        private protected override Action ReadStaged(StateReader r)
        {
            var options = base.ReadStaged(r);
            var counts = SavedStepCounts.Read(r);
            return () =>
            {
                options();
                ((IHypergradientOptions)this).Counts = counts;
            };
        }

        private protected override Action CopyStaged(object source)
        {
            var options = base.CopyStaged(source);
            var o = (Options)source;
            var counts = SavedStepCounts.Copied(((IHypergradientOptions)o).Counts);
            return () =>
            {
                options();
                ((IHypergradientOptions)this).Counts = counts;
            };
        }

        /// <summary>Writes the options, the step count and the skipped count.</summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            base.SaveStateDict(writer);
            ((IHypergradientOptions)this).Counts.Write(writer);
        }
    }

    /// <summary>A param group of <see cref="HypergradientSGD"/>, with optional per-group options.</summary>
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
