using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

// HypergradientAdam's per-parameter state, per-group options (with the step counters) and param group.
public partial class HypergradientAdam
{
    /// <summary>
    /// Per-parameter state: Adam's step count and moments (TorchSharp's names), the previous Adam direction
    /// and the rates of the per-tensor or per-parameter scope. The tensors are null until the parameter's
    /// first step. For a float16 or bfloat16 parameter the tensors are float32, and with <c>master_weights</c>
    /// <see cref="master_param"/> holds its float32 master copy.
    /// </summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad, IHypergradientState, IRoundingStepState
    {
        /// <summary>The scope of the optimizer this state belongs to (what a loaded state must hold).</summary>
        internal HypergradientScope Scope { get; init; }

        /// <summary>The steps this parameter has taken (counted per parameter, as Adam does).</summary>
        public long step;
        /// <summary>The running average of the gradient.</summary>
        public Tensor? exp_avg;
        /// <summary>The running average of the squared gradient.</summary>
        public Tensor? exp_avg_sq;
        /// <summary>The running maximum of <see cref="exp_avg_sq"/> (AMSGrad).</summary>
        public Tensor? max_exp_avg_sq;
        /// <summary>The previous update direction m̂/(√v̂ + ε), zero before the first step.</summary>
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
        public void Dispose() => Replace(step, null, null, null, null, null, tensor_rate, null);

        /// <summary>Moves the tensors to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            exp_avg = StateTensors.Move(exp_avg, device);
            exp_avg_sq = StateTensors.Move(exp_avg_sq, device);
            max_exp_avg_sq = StateTensors.Move(max_exp_avg_sq, device);
            prev_update = StateTensors.Move(prev_update, device);
            parameter_rates = StateTensors.Move(parameter_rates, device);
            master_param = StateTensors.Move(master_param, device);
        }

        /// <summary>Reads the state written by <see cref="SaveStateDict(BinaryWriter)"/>; nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">A tensor does not fit the parameter, a rate is invalid, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(HypergradientAdam)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source, staging);

        private Action ReadStaged(StateReader r)
        {
            long s = r.ReadCount("the step count");
            var m = r.ReadOptionalTensor("exp_avg", _parameter, StateType);
            var v = r.ReadOptionalTensor("exp_avg_sq", _parameter, StateType);
            var w = r.ReadOptionalTensor("max_exp_avg_sq", _parameter, StateType);
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
                Replace(s, m, v, w, u, rates, rate, master);
                _roundingStep = rounding;
            };
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State o)
            {
                throw new ArgumentException($"Expected a HypergradientAdam.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            const string owner = nameof(HypergradientAdam);
            if (o.step < 0)
            {
                throw new ArgumentException($"{owner}: the source's step count is negative ({o.step}).", nameof(source));
            }
            double rate = HypergradientStateRules.CopiedTensorRate(o.tensor_rate, owner);
            var m = StateLoad.CopyTensor(o.exp_avg, _parameter, staging, owner, "exp_avg", StateType);
            var v = StateLoad.CopyTensor(o.exp_avg_sq, _parameter, staging, owner, "exp_avg_sq", StateType);
            var w = StateLoad.CopyTensor(o.max_exp_avg_sq, _parameter, staging, owner, "max_exp_avg_sq", StateType);
            var u = StateLoad.CopyTensor(o.prev_update, _parameter, staging, owner, "previous update", StateType);
            var rates = StateLoad.CopyTensor(o.parameter_rates, _parameter, staging, owner, "per-parameter rates", StateType);
            var master = StateLoad.CopyTensor(o.master_param, _parameter, staging, owner, "master_param", ScalarType.Float32);
            HypergradientStateRules.CheckRates(Scope, rates, msg => new ArgumentException($"{owner}: {msg}", nameof(source)));
            long s = o.step;
            long rounding = o._roundingStep;
            return () =>
            {
                Replace(s, m, v, w, u, rates, rate, master);
                _roundingStep = rounding;
            };
        }

        private void Replace(long s, Tensor? m, Tensor? v, Tensor? w, Tensor? u, Tensor? rates, double rate, Tensor? master)
        {
            foreach (var t in (ReadOnlySpan<Tensor?>)[exp_avg, exp_avg_sq, max_exp_avg_sq, prev_update, parameter_rates, master_param])
            {
                t?.Dispose();
            }
            (step, exp_avg, exp_avg_sq, max_exp_avg_sq, prev_update, parameter_rates, tensor_rate) = (s, m, v, w, u, rates, rate);
            master_param = master;
        }

        /// <summary>
        /// Writes the step count, the tensors (each optional) and the per-tensor rate; for a float16 or bfloat16
        /// parameter, then a flag and the float32 master copy when there is one, and the optimizer's
        /// stochastic-rounding step count (an int64).
        /// </summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            writer.Write(step);
            SaveConditionalStateTensor(writer, exp_avg!);
            SaveConditionalStateTensor(writer, exp_avg_sq!);
            SaveConditionalStateTensor(writer, max_exp_avg_sq!);
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

        /// <summary>Equal step counts and rates, and every tensor absent in both or approximately equal.</summary>
        public override bool ApproximatelyEquals(OptimizerState other)
        {
            static bool Eq(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && a.allclose(b);
            return other is State o && step == o.step && Eq(exp_avg, o.exp_avg) && Eq(exp_avg_sq, o.exp_avg_sq) &&
                Eq(max_exp_avg_sq, o.max_exp_avg_sq) && Eq(prev_update, o.prev_update) && Eq(parameter_rates, o.parameter_rates) &&
                tensor_rate == o.tensor_rate && Eq(master_param, o.master_param);
        }

        /// <summary>Clears Adam's state, the previous update and the master copy (the rates are kept).</summary>
        public override void Initialize(OptimizerOptions options)
        {
            var rates = parameter_rates;
            parameter_rates = null;
            Replace(0, null, null, null, null, rates, tensor_rate, null);
        }
    }

    /// <summary>Options of a param group (<see cref="FusedAdam.Options"/>'s); null values take the optimizer's
    /// defaults. Also carries the optimizer's step and skipped counts through <c>state_dict</c>.</summary>
    public class Options : FusedAdam.Options, IHypergradientOptions
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
            if (source is not Options o)
            {
                throw new ArgumentException($"Expected HypergradientAdam options, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            var options = base.CopyStaged(source);
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

    /// <summary>A param group of <see cref="HypergradientAdam"/>, with optional per-group options.</summary>
    public class ParamGroup : ParamGroup<Options>, IBetas
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
        public ParamGroup(IEnumerable<Parameter> parameters, double? lr = null, double? beta1 = null, double? beta2 = null, double? eps = null,
            double? weight_decay = null, bool? amsgrad = null, bool? maximize = null)
            : base(parameters, new Options
            {
                LearningRate = lr,
                beta1 = beta1,
                beta2 = beta2,
                eps = eps,
                weight_decay = weight_decay,
                amsgrad = amsgrad,
                maximize = maximize,
            })
        {
        }

        /// <summary>The group's (beta1, beta2), for beta schedulers such as <c>OneCycleLR</c>; checked at the next step.</summary>
        public (double, double) Betas
        {
            get => (Options.beta1 ?? 0.9, Options.beta2 ?? 0.999);
            set => (Options.beta1, Options.beta2) = value;
        }
    }
}
