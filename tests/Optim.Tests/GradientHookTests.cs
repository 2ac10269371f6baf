using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Optim.Tests;

/// <summary>
/// The TorchSharp facts behind DataParallel reducing gradients after backward() instead of overlapping
/// (docs/distributed.md, "Overlap with the backward pass"): no gradient or backward hooks, and a custom
/// autograd function on a parameter runs before the parameter's gradient is accumulated. If a TorchSharp
/// upgrade adds a hook, these fail: revisit the overlap then.
/// </summary>
[TestFixture]
public class GradientHookTests
{
    [Test]
    public void TorchSharpHasNoGradientOrBackwardHooks()
    {
        string[] hooks = { "register_hook", "register_post_accumulate_grad_hook", "register_full_backward_hook", "register_backward_hook" };
        foreach (var type in new[] { typeof(Tensor), typeof(Parameter), typeof(nn.Module), typeof(Linear) })
        {
            var names = type.GetMethods(BindingFlags.Public | BindingFlags.Instance).Select(m => m.Name).ToHashSet();
            Assert.That(names.Intersect(hooks), Is.Empty, $"{type.Name} now has a gradient or backward hook");
        }
        Assert.That(typeof(Linear).GetMethods().Select(m => m.Name), Does.Contain("register_forward_pre_hook"));
    }

    [Test]
    public void CustomFunctionOnAParameterRunsBeforeItsGradientIsAccumulated()
    {
        using var scope = torch.NewDisposeScope();
        var w = nn.Parameter(torch.ones(3, 3));
        var x = torch.ones(2, 3);
        torch.matmul(x, w).sum().backward(); // every element of w.grad: 2
        GradProbe.Watched = w;
        torch.matmul(x, GradProbe.apply(w)).sum().backward();
        Assert.That(GradProbe.Seen, Is.EqualTo(2f), "the function's backward saw the gradient before this pass's accumulation");
        Assert.That(w.grad![0, 0].item<float>(), Is.EqualTo(4f));
    }

    // The identity; its backward records what the watched parameter's gradient holds at that moment.
    private sealed class GradProbe : torch.autograd.SingleTensorFunction<GradProbe>
    {
        public static Tensor? Watched;
        public static float Seen = float.NaN;

        public override string Name => nameof(GradProbe);

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars) => ((Tensor)vars[0]).clone();

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output)
        {
            Seen = Watched!.grad![0, 0].item<float>();
            return new List<Tensor> { grad_output };
        }
    }
}
