using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

// FusedAdam's (and FusedAdamW's) per-parameter state, per-group options and param group.
public partial class FusedAdam
{
    /// <summary>
    /// Per-parameter state: the step count and the moments (TorchSharp's and PyTorch's names). The moments
    /// are null until the parameter's first step, then zeros updated by every step; <c>max_exp_avg_sq</c>
    /// exists once a step with <c>amsgrad</c> has run. For a float16 or bfloat16 parameter the moments are
    /// float32, and with <c>master_weights</c> <see cref="master_param"/> holds its float32 master copy.
    /// </summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad, IRoundingStepState
    {
        /// <summary>The steps this parameter has taken (PyTorch counts per parameter: only steps where it had a gradient).</summary>
        public long step;
        /// <summary>The running average of the gradient.</summary>
        public Tensor? exp_avg;
        /// <summary>The running average of the squared gradient.</summary>
        public Tensor? exp_avg_sq;
        /// <summary>The running maximum of <see cref="exp_avg_sq"/> (AMSGrad).</summary>
        public Tensor? max_exp_avg_sq;
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

        /// <summary>Disposes the moments.</summary>
        public void Dispose() => Replace(step, null, null, null, null);

        /// <summary>Moves the moments to <paramref name="device"/>.</summary>
        public override void to(Device device)
        {
            exp_avg = StateTensors.Move(exp_avg, device);
            exp_avg_sq = StateTensors.Move(exp_avg_sq, device);
            max_exp_avg_sq = StateTensors.Move(max_exp_avg_sq, device);
            master_param = StateTensors.Move(master_param, device);
        }

        // float16 and bfloat16 parameters: float32 moments, and a master copy in the saved state.
        private bool LowPrecision => TensorChecks.IsLowPrecision(_parameter.dtype);

        private ScalarType MomentType => TensorChecks.StateType(_parameter.dtype);

        /// <summary>Reads the state written by <see cref="SaveStateDict(BinaryWriter)"/> (TorchSharp's Adam format); nothing changes if it is invalid.</summary>
        /// <exception cref="InvalidDataException">A tensor does not fit the parameter, the step is negative, or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(FusedAdam)) { Part = "parameter state" };
            var apply = ReadStaged(r);
            r.Staged.Commit();
            apply();
        }

        /// <summary>
        /// Writes the step, both moments and the optional running maximum, as TorchSharp's Adam does (moments not
        /// created yet are written as zeros, which is what they start as); for a float16 or bfloat16 parameter,
        /// then a flag and the float32 master copy when there is one, and the optimizer's stochastic-rounding step
        /// count (an int64).
        /// </summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            writer.Write(step);
            SaveOrZeros(writer, exp_avg);
            SaveOrZeros(writer, exp_avg_sq);
            writer.Write(max_exp_avg_sq is not null);
            max_exp_avg_sq?.Save(writer);
            if (LowPrecision)
            {
                writer.Write(master_param is not null);
                master_param?.Save(writer);
                writer.Write(_roundingStep);
            }
        }

        private void SaveOrZeros(BinaryWriter writer, Tensor? t)
        {
            if (t is not null)
            {
                t.Save(writer);
                return;
            }
            using var zeros = torch.zeros_like(_parameter, MomentType, device: torch.CPU);
            zeros.Save(writer);
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
            long s = r.ReadCount("the step count");
            var m = r.ReadTensor("exp_avg", _parameter, MomentType);
            var v = r.ReadTensor("exp_avg_sq", _parameter, MomentType);
            var w = r.ReadOptionalTensor("max_exp_avg_sq", _parameter, MomentType);
            var master = LowPrecision ? r.ReadOptionalTensor("master_param", _parameter, ScalarType.Float32) : null;
            long rounding = LowPrecision ? r.ReadCount("the stochastic rounding step count") : 0;
            return () =>
            {
                Replace(s, m, v, w, master);
                _roundingStep = rounding;
            };
        }

        private Action CopyStaged(object source, Staging staging)
        {
            if (source is not State other)
            {
                throw new ArgumentException($"Expected a FusedAdam.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            if (other.step < 0)
            {
                throw new ArgumentException($"FusedAdam: the source's step count is negative ({other.step}).", nameof(source));
            }
            long s = other.step;
            var m = StateLoad.CopyTensor(other.exp_avg, _parameter, staging, nameof(FusedAdam), "exp_avg", MomentType);
            var v = StateLoad.CopyTensor(other.exp_avg_sq, _parameter, staging, nameof(FusedAdam), "exp_avg_sq", MomentType);
            var w = StateLoad.CopyTensor(other.max_exp_avg_sq, _parameter, staging, nameof(FusedAdam), "max_exp_avg_sq", MomentType);
            var master = StateLoad.CopyTensor(other.master_param, _parameter, staging, nameof(FusedAdam), "master_param", ScalarType.Float32);
            if ((m is null) != (v is null))
            {
                throw new ArgumentException("FusedAdam: the source has one moment but not the other.", nameof(source));
            }
            long rounding = other._roundingStep;
            return () =>
            {
                Replace(s, m, v, w, master);
                _roundingStep = rounding;
            };
        }

        private void Replace(long s, Tensor? m, Tensor? v, Tensor? w, Tensor? master)
        {
            exp_avg?.Dispose();
            exp_avg_sq?.Dispose();
            max_exp_avg_sq?.Dispose();
            master_param?.Dispose();
            (step, exp_avg, exp_avg_sq, max_exp_avg_sq, master_param) = (s, m, v, w, master);
        }

        /// <summary>True when the step counts are equal and every moment is absent in both or approximately equal.</summary>
        public override bool ApproximatelyEquals(OptimizerState other) =>
            other is State rhs && step == rhs.step && Close(exp_avg, rhs.exp_avg) && Close(exp_avg_sq, rhs.exp_avg_sq) &&
            Close(max_exp_avg_sq, rhs.max_exp_avg_sq) && Close(master_param, rhs.master_param);

        private static bool Close(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && a.allclose(b);

        /// <summary>Clears the state: the next step starts from step 0 with zero moments.</summary>
        public override void Initialize(OptimizerOptions options) => Replace(0, null, null, null, null);
    }

    /// <summary>Hyperparameters of a param group (TorchSharp's names). Unset (null) values take the optimizer's defaults.</summary>
    public class Options : OptimizerOptions, IStagedLoad
    {
        /// <summary>Coefficient of the running average of the gradient.</summary>
        public double? beta1;
        /// <summary>Coefficient of the running average of the squared gradient.</summary>
        public double? beta2;
        /// <summary>Weight decay: an L2 penalty for <see cref="FusedAdam"/>, decoupled for <see cref="FusedAdamW"/>.</summary>
        public double? weight_decay;
        /// <summary>Term added to the denominator for numerical stability.</summary>
        public double? eps;
        /// <summary>Use the AMSGrad variant.</summary>
        public bool? amsgrad;
        /// <summary>Maximize instead of minimize.</summary>
        public bool? maximize;

        /// <summary>Reads the options (TorchSharp's Adam format); nothing changes unless every value is valid.</summary>
        /// <exception cref="InvalidDataException">A value is invalid or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(FusedAdam)) { Part = "param group options" };
            ReadStaged(r)();
        }

        /// <summary>Copies the options of another instance; nothing changes if they are invalid.</summary>
        /// <exception cref="ArgumentException">Another options type, an unset or an invalid value.</exception>
        public override void LoadStateDict(OptimizerOptions source) => CopyStaged(source)();

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source);

        /// <summary>Reads and checks the options; returns the action that applies them (which cannot fail).</summary>
        private protected virtual Action ReadStaged(StateReader r)
        {
            double initial = r.ReadNonNegative("the initial learning rate");
            double lr = r.ReadNonNegative("the learning rate");
            double b1 = r.ReadDouble("beta1");
            double b2 = r.ReadDouble("beta2");
            double e = r.ReadDouble("eps");
            double wd = r.ReadDouble("weight_decay");
            bool ams = r.ReadBool("amsgrad");
            bool max = r.ReadBool("maximize");
            try
            {
                ValidateOptions(lr, b1, b2, e, wd, null);
            }
            catch (ArgumentException ex)
            {
                throw r.Invalid(ex.Message);
            }
            return () => (InitialLearningRate, LearningRate, beta1, beta2, eps, weight_decay, amsgrad, maximize) = (initial, lr, b1, b2, e, wd, ams, max);
        }

        /// <summary>Checks another instance's options; returns the action that copies them (which cannot fail).</summary>
        private protected virtual Action CopyStaged(object source)
        {
            if (source is not Options o)
            {
                throw new ArgumentException($"Expected FusedAdam options, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            if (o.LearningRate is not double lr || o.beta1 is not double b1 || o.beta2 is not double b2 || o.eps is not double e ||
                o.weight_decay is not double wd || o.amsgrad is not bool ams || o.maximize is not bool max)
            {
                throw new ArgumentException("The source options have unset values.", nameof(source));
            }
            ValidateOptions(lr, b1, b2, e, wd, null);
            double initial = o.InitialLearningRate;
            return () => (InitialLearningRate, LearningRate, beta1, beta2, eps, weight_decay, amsgrad, maximize) = (initial, lr, b1, b2, e, wd, ams, max);
        }

        /// <summary>Writes the options (TorchSharp's Adam format).</summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            base.SaveStateDict(writer);
            writer.Write(beta1!.Value);
            writer.Write(beta2!.Value);
            writer.Write(eps!.Value);
            writer.Write(weight_decay!.Value);
            writer.Write(amsgrad!.Value);
            writer.Write(maximize!.Value);
        }
    }

    /// <summary>A param group of <see cref="FusedAdam"/> or <see cref="FusedAdamW"/>, with optional per-group options.</summary>
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
