using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.optim;

namespace Optim;

// Sls's per-parameter scratch, its options (which carry the step size and counters through
// state_dict) and its param group.
public sealed partial class Sls
{
    /// <summary>Per-parameter state: the copy of θ a step's line search starts from (scratch, not saved).</summary>
    public sealed class State : OptimizerState, IDisposable, IStagedLoad
    {
        /// <summary>θ at the start of the last step, shaped like the parameter; null before the first step.</summary>
        public Tensor? origin;

        /// <summary>Creates the state of one parameter.</summary>
        public State(Parameter parameter) : base(parameter)
        {
        }

        /// <summary>Disposes the copy.</summary>
        public void Dispose()
        {
            origin?.Dispose();
            origin = null;
        }

        /// <summary>Drops the copy (the next step makes one on <paramref name="device"/>).</summary>
        public override void to(Device device) => Dispose();

        /// <summary>Reads nothing: the copy is scratch.</summary>
        public override void LoadStateDict(BinaryReader reader)
        {
        }

        /// <summary>Writes nothing: the copy is scratch.</summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
        }

        /// <summary>Nothing to copy: the copy is scratch.</summary>
        public override void LoadStateDict(OptimizerState source) => CopyStaged(source, null!)();

        Action IStagedLoad.ReadStaged(StateReader reader) => () => { };

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source, staging);

        private static Action CopyStaged(object source, Staging staging)
        {
            if (source is not State)
            {
                throw new ArgumentException($"Expected an Sls.State, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            return () => { };
        }

        /// <summary>True for another <see cref="State"/> (nothing else to compare).</summary>
        public override bool ApproximatelyEquals(OptimizerState other) => other is State;

        /// <summary>Drops the copy.</summary>
        public override void Initialize(OptimizerOptions options) => Dispose();
    }

    /// <summary>
    /// A param group's options. Sls has one step size for all parameters, so the options hold no
    /// hyperparameters of their own; they carry the optimizer's step size and counters through
    /// <c>state_dict</c> (every group the same values), and <c>LearningRate</c> shows the step size.
    /// </summary>
    public sealed class Options : OptimizerOptions, IStagedLoad
    {
        internal double step_size = 1;
        internal long steps;
        internal long forward_passes;
        internal int last_forward_passes;

        internal void Set(double stepSize, long steps, long forwardPasses, int lastForwardPasses)
        {
            LearningRate = stepSize;
            (step_size, this.steps, forward_passes, last_forward_passes) = (stepSize, steps, forwardPasses, lastForwardPasses);
        }

        /// <summary>Reads the options; nothing changes unless every value is valid.</summary>
        /// <exception cref="InvalidDataException">A value is invalid or the data ends early.</exception>
        public override void LoadStateDict(BinaryReader reader)
        {
            using var r = new StateReader(reader, nameof(Sls)) { Part = "param group options" };
            ReadStaged(r)();
        }

        /// <summary>Copies the options of another <see cref="Options"/>; nothing changes if they are invalid.</summary>
        public override void LoadStateDict(OptimizerOptions source) => CopyStaged(source)();

        Action IStagedLoad.ReadStaged(StateReader reader) => ReadStaged(reader);

        Action IStagedLoad.CopyStaged(object source, Staging staging) => CopyStaged(source);

        private Action ReadStaged(StateReader r)
        {
            double initial = r.ReadNonNegative("the initial step size");
            r.ReadNonNegative("the learning rate (the step size)");
            double eta = r.ReadNonNegative("the step size");
            long s = r.ReadCount("the step count");
            long f = r.ReadCount("the forward pass count");
            long last = r.ReadCount("the last step's forward pass count");
            if (last > MaxTrials + 1)
            {
                throw r.Invalid($"the last step's forward pass count must be at most {MaxTrials + 1}, got {last}.");
            }
            return () =>
            {
                InitialLearningRate = initial;
                Set(eta, s, f, (int)last);
            };
        }

        private Action CopyStaged(object source)
        {
            if (source is not Options o)
            {
                throw new ArgumentException($"Expected Sls options, got {source?.GetType().Name ?? "null"}.", nameof(source));
            }
            if (!double.IsFinite(o.step_size) || o.step_size < 0 || o.steps < 0 || o.forward_passes < 0 || o.last_forward_passes < 0)
            {
                throw new ArgumentException("The source options hold an invalid step size or counter.", nameof(source));
            }
            var (initial, eta, s, f, last) = (o.InitialLearningRate, o.step_size, o.steps, o.forward_passes, o.last_forward_passes);
            return () =>
            {
                InitialLearningRate = initial;
                Set(eta, s, f, last);
            };
        }

        /// <summary>Writes the initial step size, the learning rate (the step size), then the step size and the counters.</summary>
        public override void SaveStateDict(BinaryWriter writer)
        {
            base.SaveStateDict(writer);
            writer.Write(step_size);
            writer.Write(steps);
            writer.Write(forward_passes);
            writer.Write((long)last_forward_passes);
        }
    }

    /// <summary>A param group of <see cref="Sls"/> (every group shares the one step size).</summary>
    public sealed class ParamGroup : ParamGroup<Options>
    {
        /// <summary>An empty group (set <c>Parameters</c>).</summary>
        public ParamGroup()
        {
        }

        /// <summary>A group of parameters.</summary>
        public ParamGroup(IEnumerable<Parameter> parameters) : base(parameters, new Options())
        {
        }
    }
}
