using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison;

/// <summary>
/// The King James text that scripts/setup.sh writes from Debian's bible-kjv package (one verse a line,
/// references stripped), as character ids: the last 10% is held out for validation.
/// </summary>
internal sealed class CharText : IDisposable
{
    /// <summary>Where setup.sh writes the text, under the data directory's parent (artifacts/data/).</summary>
    public const string FileName = "kjv.txt";

    public Tensor Train { get; }

    public Tensor Validation { get; }

    public int Vocabulary { get; }

    public long Characters { get; }

    private CharText(Tensor train, Tensor validation, int vocabulary, long characters) =>
        (Train, Validation, Vocabulary, Characters) = (train, validation, vocabulary, characters);

    /// <summary>The text's path for a compare data directory (artifacts/data/mnist → artifacts/data/text/kjv.txt).</summary>
    public static string PathFor(string dataDir) => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(dataDir)) ?? ".", "text", FileName);

    public static CharText Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The King James text was not found at {path}: run scripts/setup.sh (it installs Debian's bible-kjv and writes the text there).");
        }
        string text = File.ReadAllText(path, Encoding.UTF8);
        if (text.Length < 1_000_000)
        {
            throw new InvalidDataException($"{path}: {text.Length:N0} characters; the language model needs at least 1,000,000 (rerun scripts/setup.sh).");
        }
        var alphabet = text.Distinct().OrderBy(c => c).ToArray();
        var index = alphabet.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => (long)p.i);
        var ids = text.Select(c => index[c]).ToArray();
        long split = ids.LongLength * 9 / 10;
        using var all = torch.tensor(ids);
        return new CharText(all.narrow(0, 0, split).clone().DetachFromDisposeScope(), all.narrow(0, split, ids.LongLength - split).clone().DetachFromDisposeScope(),
            alphabet.Length, ids.LongLength);
    }

    public void Dispose()
    {
        Train.Dispose();
        Validation.Dispose();
    }
}

/// <summary>
/// Character-level language modelling of the King James text with a small decoder-only transformer
/// (pre-norm blocks of causal self-attention and a GELU MLP, learned positions): an example is one
/// window of <see cref="Context"/> + 1 characters of the training text (the windows do not overlap).
/// The evaluation is the mean cross-entropy (nats per character) over fixed held-out windows;
/// perplexity is its exponential. No accuracy.
/// </summary>
internal sealed class CharLanguageModel : TrainingTask
{
    public const int Context = 64;
    public const int Width = 144;
    public const int Layers = 4;
    public const int Heads = 4;

    /// <summary>Windows per minibatch (the LM's own batch: --batch sets the other tasks').</summary>
    public const int Sequences = 8;

    /// <summary>Held-out windows of the evaluation (evenly spaced over the validation text).</summary>
    public const int EvalWindows = 16;

    private readonly Lazy<CharText> _text;
    private readonly int _steps;
    private readonly int? _seeds;
    private Tensor? _evalX;
    private Tensor? _evalY;

    public CharLanguageModel(string name, Lazy<CharText> text, int steps, int? seeds)
    {
        (Name, _text, _steps, _seeds) = (name, text, steps, seeds);
    }

    public override string Name { get; }

    public override string Description =>
        $"character-level transformer LM ({Layers} layers, width {Width}, {Heads} heads, context {Context}, {ParameterCount(_text.Value.Vocabulary):N0} parameters) " +
        $"on the King James text ({_text.Value.Characters:N0} characters, {_text.Value.Vocabulary} symbols; 90% train, {EvalWindows} held-out windows), batch {Sequences} windows" +
        (_seeds is int n ? $", {n} seed{(n == 1 ? "" : "s")} (the time budget; char-lm-long runs them all)" : "");

    public override string EvalName => "validation loss (nats/char)";

    public override bool HasAccuracy => false;

    public override long TrainExamples => (_text.Value.Train.shape[0] - 1) / Context;

    public override int DefaultEpochs => 1;

    public override int? DefaultSteps => _steps;

    public override int? Batch => Sequences;

    public override int? Seeds => _seeds;

    public override double? UsualRate(Family family) => family is Family.Adam or Family.AdamW ? 3e-3 : null;

    public override bool AdamIsUsual => true;

    public override bool Suits(Method method) => method.Family is Family.AdamW or Family.AdamHd;

    /// <summary>Parameters of the model for a vocabulary (embeddings, blocks, final norm and head).</summary>
    public static long ParameterCount(int vocabulary)
    {
        long block = 2 * 2 * Width + (3 * Width * Width + 3 * Width) + (Width * Width + Width) + (4 * Width * Width + 4 * Width) + (4 * Width * Width + Width);
        return vocabulary * Width + Context * Width + Layers * block + 2 * Width + Width * vocabulary + vocabulary;
    }

    public override Learner Create(int seed)
    {
        var text = _text.Value;
        if (_evalX is null)
        {
            long span = text.Validation.shape[0] - Context - 1;
            using var starts = torch.linspace(0, span, EvalWindows).to(ScalarType.Int64);
            using var windows = Windows(text.Validation, starts);
            _evalX = windows.narrow(1, 0, Context).clone().DetachFromDisposeScope();
            _evalY = windows.narrow(1, 1, Context).clone().DetachFromDisposeScope();
        }
        torch.manual_seed(seed);
        return new Model(new Transformer(text.Vocabulary), text, _evalX, _evalY!);
    }

    /// <summary>Windows of Context + 1 characters starting at <paramref name="starts"/>: [count, Context + 1].</summary>
    private static Tensor Windows(Tensor ids, Tensor starts)
    {
        using var offsets = torch.arange(Context + 1, dtype: ScalarType.Int64);
        using var positions = starts.unsqueeze(1) + offsets.unsqueeze(0);
        return ids.index(positions);
    }

    public override void Dispose()
    {
        _evalX?.Dispose();
        _evalY?.Dispose();
    }

    private sealed class Model : Learner
    {
        private readonly Transformer _net;
        private readonly CharText _text;
        private readonly Tensor _evalX;
        private readonly Tensor _evalY;

        public Model(Transformer net, CharText text, Tensor evalX, Tensor evalY)
        {
            (_net, _text, _evalX, _evalY) = (net, text, evalX, evalY);
            Groups = net.Groups();
        }

        public override IReadOnlyList<ParameterGroup> Groups { get; }

        public override Tensor Loss(Tensor batch)
        {
            using var scope = torch.NewDisposeScope();
            // The batch indexes the non-overlapping windows of the training text.
            var windows = Windows(_text.Train, batch * Context);
            var logits = _net.call(windows.narrow(1, 0, Context));
            var loss = nn.functional.cross_entropy(logits.reshape(-1, _text.Vocabulary), windows.narrow(1, 1, Context).reshape(-1));
            return loss.MoveToOuterDisposeScope();
        }

        public override (double Loss, double Accuracy) Evaluate()
        {
            using var noGrad = torch.no_grad();
            using var scope = torch.NewDisposeScope();
            var logits = _net.call(_evalX);
            return (nn.functional.cross_entropy(logits.reshape(-1, _text.Vocabulary), _evalY.reshape(-1)).ToDouble(), double.NaN);
        }

        public override void Dispose() => _net.Dispose();
    }

    /// <summary>The decoder-only transformer: token and position embeddings, pre-norm blocks, a final norm and a linear head.</summary>
    private sealed class Transformer : nn.Module<Tensor, Tensor>
    {
        private readonly Embedding tokens;
        private readonly Embedding positions;
        private readonly ModuleList<Block> blocks;
        private readonly LayerNorm norm;
        private readonly Linear head;

        public Transformer(int vocabulary) : base(nameof(Transformer))
        {
            tokens = nn.Embedding(vocabulary, Width);
            positions = nn.Embedding(Context, Width);
            blocks = nn.ModuleList(Enumerable.Range(0, Layers).Select(_ => new Block()).ToArray());
            norm = nn.LayerNorm(Width);
            head = nn.Linear(Width, vocabulary);
            RegisterComponents();
        }

        /// <summary>HD's per-group scope: the embeddings, each block, the head (with the final norm).</summary>
        public ParameterGroup[] Groups() =>
            new[] { new ParameterGroup("embeddings", tokens.parameters().Concat(positions.parameters()).ToList()) }
                .Concat(blocks.Select((b, i) => new ParameterGroup($"block{i}", b.parameters().ToList())))
                .Append(new ParameterGroup("head", norm.parameters().Concat(head.parameters()).ToList()))
                .ToArray();

        public override Tensor forward(Tensor ids)
        {
            using var scope = torch.NewDisposeScope();
            using var at = torch.arange(ids.shape[1], dtype: ScalarType.Int64);
            var x = tokens.call(ids) + positions.call(at);
            foreach (var block in blocks)
            {
                x = block.call(x);
            }
            return head.call(norm.call(x)).MoveToOuterDisposeScope();
        }
    }

    /// <summary>x + attention(norm(x)), then x + mlp(norm(x)); causal multi-head attention.</summary>
    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly LayerNorm norm1;
        private readonly Linear qkv;
        private readonly Linear proj;
        private readonly LayerNorm norm2;
        private readonly Linear up;
        private readonly Linear down;

        public Block() : base(nameof(Block))
        {
            norm1 = nn.LayerNorm(Width);
            qkv = nn.Linear(Width, 3 * Width);
            proj = nn.Linear(Width, Width);
            norm2 = nn.LayerNorm(Width);
            up = nn.Linear(Width, 4 * Width);
            down = nn.Linear(4 * Width, Width);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            long b = x.shape[0], t = x.shape[1];
            var parts = qkv.call(norm1.call(x)).reshape(b, t, 3, Heads, Width / Heads).permute(2, 0, 3, 1, 4);
            var attended = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], is_casual: true);
            x = x + proj.call(attended.transpose(1, 2).reshape(b, t, Width));
            return x + down.call(nn.functional.gelu(up.call(norm2.call(x))));
        }
    }
}
