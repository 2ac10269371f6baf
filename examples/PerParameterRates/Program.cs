// Hypergradient descent with one learning rate per weight (Baydin et al., 2018): the rates adapt during
// training, and you can read them back per tensor and per weight.
using TorchSharp;
using static TorchSharp.torch;

// Synthetic data: 4,096 points in 20 dimensions, in 4 classes given by a fixed random linear map.
torch.manual_seed(0);
var x = torch.randn(4096, 20);
var y = x.matmul(torch.randn(20, 4)).argmax(1);

var model = nn.Sequential(("fc1", nn.Linear(20, 64)), ("relu", nn.ReLU()), ("fc2", nn.Linear(64, 4)));
var optimizer = new Optim.HypergradientSGD(model.parameters(), lr: 0.05, hypergrad_lr: 0.02,
    scope: Optim.HypergradientScope.PerParameter, rule: Optim.HypergradientRule.Normalized, momentum: 0.9,
    lr_min: 0.0005, lr_max: 0.5);   // keep every rate within [lr / 100, lr × 10]

for (int step = 1; step <= 500; step++)
{
    using var scope = torch.NewDisposeScope();
    var idx = torch.randint(0, x.shape[0], new long[] { 128 });
    optimizer.zero_grad();
    var loss = nn.functional.cross_entropy(model.call(x[idx]), y[idx]);
    loss.backward();
    optimizer.step();
    if (step % 100 == 0)
    {
        Console.WriteLine($"step {step}: loss {loss.ToDouble():F4}");
    }
}

// One rate per weight: a tensor shaped like each parameter (a copy).
foreach (var (name, p) in model.named_parameters())
{
    using var rates = optimizer.ParameterLearningRates(p);
    Console.WriteLine($"{name,-10} {string.Join("x", p.shape),-6} rates: min {rates.min().ToDouble():G3}, " +
        $"mean {rates.mean().ToDouble():G3}, max {rates.max().ToDouble():G3}");
}
// The mean rate of each tensor, in parameter order; steps skipped for a non-finite gradient.
Console.WriteLine($"mean rate per tensor: {string.Join(", ", optimizer.TensorLearningRates().Select(r => r.ToString("G3")))}");
Console.WriteLine($"steps: {optimizer.Steps}, skipped: {optimizer.SkippedSteps}");
