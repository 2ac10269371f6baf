// Saving a run and resuming it: the model's weights, FusedSGD's state (momentum buffers, rates) and
// GreedyLR's whole state go to three files; fresh objects load them and continue exactly where the run
// stopped. The program checks that against a run that was never interrupted.
using TorchSharp;
using static TorchSharp.torch;

// Synthetic data: 4,096 points in 20 dimensions, in 4 classes given by a fixed random linear map.
torch.manual_seed(0);
var x = torch.randn(4096, 20);
var y = x.matmul(torch.randn(20, 4)).argmax(1);
var (trainX, trainY, valX, valY) = (x[..3072], y[..3072], x[3072..], y[3072..]);

// Uninterrupted: 400 steps.
var (a, optA, schedA) = NewRun();
Train(a, optA, schedA, 1, 400);

// Interrupted after 200 steps: save the three states.
string dir = Directory.CreateTempSubdirectory("optim-example-").FullName;
var (b, optB, schedB) = NewRun();
Train(b, optB, schedB, 1, 200);
b.save(Path.Combine(dir, "model.bin"));
optB.save_state_dict(Path.Combine(dir, "optimizer.bin"));
schedB.save_state_dict(Path.Combine(dir, "scheduler.bin"));

// Resumed (as a new process would): the same objects, then the three files, then steps 201-400.
var (c, optC, schedC) = NewRun();
c.load(Path.Combine(dir, "model.bin"));
optC.load_state_dict(Path.Combine(dir, "optimizer.bin"));
schedC.load_state_dict(Path.Combine(dir, "scheduler.bin"));
Train(c, optC, schedC, 201, 400);
Directory.Delete(dir, recursive: true);

bool same = a.parameters().Zip(c.parameters()).All(pair => pair.First.eq(pair.Second).all().item<bool>());
Console.WriteLine($"resumed run equals the uninterrupted one: {same} (lr {optA.ParamGroups.First().LearningRate:G4} " +
    $"and {optC.ParamGroups.First().LearningRate:G4}, GreedyLR evaluations {schedA.State.Steps} and {schedC.State.Steps})");
return same ? 0 : 1;

(nn.Module<Tensor, Tensor>, Optim.FusedSGD, Optim.GreedyLR) NewRun()
{
    torch.manual_seed(1);
    var model = nn.Sequential(("fc1", nn.Linear(20, 64)), ("relu", nn.ReLU()), ("fc2", nn.Linear(64, 4)));
    var optimizer = new Optim.FusedSGD(model.parameters(), 0.05, momentum: 0.9);
    return (model, optimizer, new Optim.GreedyLR(optimizer, factor: 0.9, patience: 1));
}

// Steps first..last; the batch of a step depends on its number only, so a resumed run sees the same
// batches. GreedyLR is stepped with the validation loss every 20 steps.
void Train(nn.Module<Tensor, Tensor> model, Optim.FusedSGD optimizer, Optim.GreedyLR scheduler, int first, int last)
{
    for (int step = first; step <= last; step++)
    {
        using var scope = torch.NewDisposeScope();
        using var batch = new torch.Generator((ulong)step);
        var idx = torch.randint(0, trainX.shape[0], new long[] { 64 }, generator: batch);
        optimizer.zero_grad();
        nn.functional.cross_entropy(model.call(trainX[idx]), trainY[idx]).backward();
        optimizer.step();
        if (step % 20 == 0)
        {
            using var noGrad = torch.no_grad();
            scheduler.step(nn.functional.cross_entropy(model.call(valX), valY).ToDouble());
        }
    }
}
