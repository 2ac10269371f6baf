using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Bench.Comparison.Learned;

/// <summary>
/// The actor-critic of the learned schedule: a small MLP (inputs → hidden → hidden, tanh) shared by a
/// policy head (one logit per action) and a value head. Saved as JSON (shapes, values, how it was trained).
/// </summary>
internal sealed class PolicyNetwork : nn.Module
{
    private readonly Linear _hidden1;
    private readonly Linear _hidden2;
    private readonly Linear _policyHead;
    private readonly Linear _valueHead;

    /// <summary>Format tag of the saved file.</summary>
    public const string Format = "optim-learned-schedule-v1";

    public PolicyNetwork(int inputs, int actions, int hidden, int seed) : base("policy")
    {
        if (inputs < 1 || actions < 2 || hidden < 1)
        {
            throw new ArgumentException($"a policy needs at least one input, two actions and one hidden unit, not {inputs}, {actions}, {hidden}.");
        }
        (Inputs, Actions, Hidden) = (inputs, actions, hidden);
        torch.manual_seed(seed);
        _hidden1 = nn.Linear(inputs, hidden);
        _hidden2 = nn.Linear(hidden, hidden);
        _policyHead = nn.Linear(hidden, actions);
        _valueHead = nn.Linear(hidden, 1);
        using (torch.no_grad())
        {
            // A near-uniform first policy: every action is explored at the start.
            _policyHead.weight!.mul_(0.01);
            _policyHead.bias!.zero_();
        }
        RegisterComponents();
    }

    public int Inputs { get; }

    public int Actions { get; }

    public int Hidden { get; }

    /// <summary>What the saved file says about how this policy was trained (free-form, for the docs and report).</summary>
    public JsonObject Training { get; set; } = new();

    /// <summary>Logits [n, actions] and values [n] of observations [n, inputs].</summary>
    public (Tensor Logits, Tensor Value) Forward(Tensor observations)
    {
        using var scope = torch.NewDisposeScope();
        var h = _hidden2.call(_hidden1.call(observations).tanh()).tanh();
        return (_policyHead.call(h).MoveToOuterDisposeScope(), _valueHead.call(h).squeeze(-1).MoveToOuterDisposeScope());
    }

    /// <summary>Log-probabilities of <paramref name="actions"/>, the policy's entropies and the values, for PPO.</summary>
    public (Tensor LogProb, Tensor Entropy, Tensor Value) Evaluate(Tensor observations, Tensor actions)
    {
        using var scope = torch.NewDisposeScope();
        var (logits, value) = Forward(observations);
        var logProbs = logits.log_softmax(-1);
        var chosen = logProbs.gather(1, actions.unsqueeze(1)).squeeze(1);
        var entropy = (logProbs.exp() * logProbs).sum(-1).neg();
        return (chosen.MoveToOuterDisposeScope(), entropy.MoveToOuterDisposeScope(), value.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The action for one observation: sampled from the policy with <paramref name="explore"/>, else the most
    /// probable one (the shipped policy in compare). Returns its log-probability and the value estimate too.
    /// </summary>
    public (int Action, double LogProb, double Value) Act(float[] observation, Random? explore)
    {
        if (observation.Length != Inputs)
        {
            throw new ArgumentException($"the policy takes {Inputs} features, not {observation.Length}.");
        }
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var (logits, value) = Forward(torch.tensor(observation).unsqueeze(0));
        var logProbs = logits.log_softmax(-1).squeeze(0).to(ScalarType.Float64).data<double>().ToArray();
        int action;
        if (explore is null)
        {
            action = Array.IndexOf(logProbs, logProbs.Max());
        }
        else
        {
            double u = explore.NextDouble(), cumulative = 0;
            action = logProbs.Length - 1;
            for (int a = 0; a < logProbs.Length; a++)
            {
                cumulative += Math.Exp(logProbs[a]);
                if (u < cumulative)
                {
                    action = a;
                    break;
                }
            }
        }
        return (action, logProbs[action], value.ToDouble());
    }

    /// <summary>Writes the network (its parameters as round-trip floats) and <see cref="Training"/> as JSON.</summary>
    public void Save(string path)
    {
        var parameters = new JsonObject();
        foreach (var (name, p) in named_parameters())
        {
            var values = p.detach().cpu().to(ScalarType.Float32).data<float>().ToArray();
            parameters[name] = new JsonObject
            {
                ["shape"] = new JsonArray(p.shape.Select(d => (JsonNode)d).ToArray()),
                ["values"] = new JsonArray(values.Select(v => (JsonNode)JsonValue.Create(v)).ToArray()),
            };
        }
        var root = new JsonObject
        {
            ["format"] = Format,
            ["inputs"] = Inputs,
            ["actions"] = Actions,
            ["hidden"] = Hidden,
            ["training"] = JsonNode.Parse(Training.ToJsonString()),
            ["parameters"] = parameters,
        };
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = false }) + "\n");
    }

    /// <summary>Reads a network written by <see cref="Save"/>; a clear error for a missing, foreign or damaged file.</summary>
    public static PolicyNetwork Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"no learned-schedule policy at {path}: run `train-schedule` to train one.", path);
        }
        JsonNode root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new InvalidDataException("empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a policy file ({e.Message}).", e);
        }
        if ((string?)root["format"] != Format)
        {
            throw new InvalidDataException($"{path}: format '{root["format"]}' is not {Format}.");
        }
        int Int(string key) => (int?)root[key] ?? throw new InvalidDataException($"{path}: '{key}' is missing.");
        var policy = new PolicyNetwork(Int("inputs"), Int("actions"), Int("hidden"), seed: 0)
        {
            Training = root["training"]?.AsObject() is JsonObject t ? (JsonObject)JsonNode.Parse(t.ToJsonString())! : new JsonObject(),
        };
        var saved = root["parameters"]?.AsObject() ?? throw new InvalidDataException($"{path}: 'parameters' is missing.");
        using var noGrad = torch.no_grad();
        foreach (var (name, p) in policy.named_parameters())
        {
            var entry = saved[name] ?? throw new InvalidDataException($"{path}: parameter '{name}' is missing.");
            var shape = entry["shape"]!.AsArray().Select(d => (long)d!).ToArray();
            if (!shape.SequenceEqual(p.shape))
            {
                throw new InvalidDataException($"{path}: parameter '{name}' has shape [{string.Join(", ", shape)}], the network needs [{string.Join(", ", p.shape)}].");
            }
            var values = entry["values"]!.AsArray().Select(v => (float)v!).ToArray();
            if (values.Length != p.numel())
            {
                throw new InvalidDataException($"{path}: parameter '{name}' has {values.Length.ToString(CultureInfo.InvariantCulture)} values, not {p.numel()}.");
            }
            using var loaded = torch.tensor(values).reshape(shape);
            p.copy_(loaded);
        }
        return policy;
    }
}
