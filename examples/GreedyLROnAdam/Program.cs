// GreedyLR on an optimizer you already use (here TorchSharp's Adam), stepped with the validation loss
// once per evaluation: it raises the rate while the loss keeps improving and lowers it while it does not.
using TorchSharp;
using static TorchSharp.torch;

// Synthetic regression: y = sin(3·x₀) + x₁·x₂ + noise; 3,000 points for training, 1,000 held out.
torch.manual_seed(0);
var x = torch.rand(4000, 3) * 2 - 1;
var y = (torch.sin(3 * x[.., 0]) + x[.., 1] * x[.., 2] + 0.05 * torch.randn(4000)).unsqueeze(1);
var (trainX, trainY, valX, valY) = (x[..3000], y[..3000], x[3000..], y[3000..]);

var model = nn.Sequential(("fc1", nn.Linear(3, 64)), ("tanh", nn.Tanh()), ("fc2", nn.Linear(64, 1)));
var optimizer = torch.optim.Adam(model.parameters(), 1e-3);
// Defaults follow the authors' reference except the bounds: min_lr = initial / 100, max_lr = initial × 10.
var scheduler = new Optim.GreedyLR(optimizer, factor: 0.9, patience: 2, cooldown: 1);

const int EvaluateEvery = 50;
for (int step = 1; step <= 1000; step++)
{
    using var scope = torch.NewDisposeScope();
    var idx = torch.randint(0, trainX.shape[0], new long[] { 64 });
    optimizer.zero_grad();
    nn.functional.mse_loss(model.call(trainX[idx]), trainY[idx]).backward();
    optimizer.step();

    if (step % EvaluateEvery == 0)
    {
        double validation;
        using (torch.no_grad())
        {
            validation = nn.functional.mse_loss(model.call(valX), valY).ToDouble();
        }
        scheduler.step(validation);   // the optimizer's param groups now hold the new rate
        var state = scheduler.State;
        Console.WriteLine($"step {step,4}: validation loss {validation:F5}, lr {scheduler.LearningRates[0]:G4} " +
            $"(best {state.Best:F5}, {state.NumGood} good / {state.NumBad} bad in a row)");
    }
}
