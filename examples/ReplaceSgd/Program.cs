// An existing TorchSharp training loop where torch.optim.SGD is replaced by Optim.FusedSGD: one line
// changes; the scheduler, zero_grad/step and state_dict calls stay as they were.
using TorchSharp;
using static TorchSharp.torch;

// Synthetic data: 4,096 points in 20 dimensions, in 4 classes given by a fixed random linear map.
torch.manual_seed(0);
var x = torch.randn(4096, 20);
var y = x.matmul(torch.randn(20, 4)).argmax(1);

var model = nn.Sequential(("fc1", nn.Linear(20, 64)), ("relu", nn.ReLU()), ("fc2", nn.Linear(64, 4)));

// was: var optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4);
var optimizer = new Optim.FusedSGD(model.parameters(), 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4);
var scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size: 4, gamma: 0.5);

const int BatchSize = 128;
for (int epoch = 1; epoch <= 10; epoch++)
{
    double total = 0;
    var order = torch.randperm(x.shape[0]);
    for (long start = 0; start < x.shape[0]; start += BatchSize)
    {
        using var scope = torch.NewDisposeScope();
        var idx = order.narrow(0, start, Math.Min(BatchSize, x.shape[0] - start));
        optimizer.zero_grad();
        var loss = nn.functional.cross_entropy(model.call(x[idx]), y[idx]);
        loss.backward();
        optimizer.step();
        total += loss.ToDouble() * idx.shape[0];
    }
    scheduler.step();
    Console.WriteLine($"epoch {epoch,2}: loss {total / x.shape[0]:F4}, lr {optimizer.ParamGroups.First().LearningRate:G3}");
}
