using Optim.Distributed;

namespace Optim.Tests;

/// <summary>ProcessGroup in a job of one (no MPI): the collective timeout's checks. The timeout ending a job is
/// checked on 2 ranks by scripts/test.sh (tests/Optim.MpiTests hang).</summary>
[TestFixture]
public class ProcessGroupTests
{
    [Test]
    public void TimeoutIsPositiveOrInfinite()
    {
        var group = ProcessGroup.Initialize();
        Assert.That(group.UsesMpi, Is.False);
        var before = group.Timeout;
        try
        {
            group.Timeout = TimeSpan.FromSeconds(2.5);
            Assert.That(group.Timeout, Is.EqualTo(TimeSpan.FromSeconds(2.5)));
            group.Timeout = Timeout.InfiniteTimeSpan;
            Assert.That(group.Timeout, Is.EqualTo(Timeout.InfiniteTimeSpan));
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => group.Timeout = TimeSpan.Zero);
            Assert.That(e!.Message, Does.Contain("is not positive"));
            Assert.Throws<ArgumentOutOfRangeException>(() => group.Timeout = TimeSpan.FromSeconds(-1));
            Assert.That(group.Timeout, Is.EqualTo(Timeout.InfiniteTimeSpan));
        }
        finally
        {
            group.Timeout = before;
        }
    }
}
