// tapir/distributed/mpi.hpp when a rank dies or hangs: the whole job must end, with an error that
// says what happened, instead of the other ranks waiting for ever in a collective. A driver (this
// program run without arguments but mpirun's path) starts itself under mpirun -np 2 in each
// scenario, with a watchdog of 60 s, and checks the exit status and the output:
//   kill:          rank 1 raises SIGKILL in the middle of a training loop of all-reduces; mpirun
//                  (OpenMPI's default) ends rank 0 and names the dead rank;
//   hang:          rank 1 stops calling collectives; with TAPIR_MPI_TIMEOUT=5 rank 0 ends the job
//                  with "MPI_Allreduce (error check) did not complete within 5 s";
//   kill-recovery: as kill, under mpirun --enable-recovery (mpirun then leaves the other ranks
//                  running), with TAPIR_MPI_TIMEOUT=5: rank 0's timeout ends the job.
// Usage: test_distributed_faults MPIRUN            (the driver, run by ctest and meson)
//        test_distributed_faults --scenario NAME   (one rank; run by mpirun)
#include <tapir/distributed/mpi.hpp>  // first: the header compiles alone

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tapir/autodiff/backward.hpp>
#include <tapir/data/dataset.hpp>
#include <tapir/loss/classification.hpp>
#include <tapir/optim/sgd.hpp>

#include "support/course_classifier.hpp"

using namespace tapir;

namespace {

/// One rank: steps of the course classifier on 2 ranks, each a few all-reduces; at step 5 rank 1
/// dies (kill) or stops calling collectives (hang). Reaching the end is the failure.
int scenario(int argc, char** argv, const std::string& name) {
    distributed::Environment env(argc, argv);
    distributed::Communicator world;
    const tapir_test::ClassifierData d = tapir_test::classifier_data(256, 3);
    nn::Sequential<float> m = tapir_test::classifier_mlp(4);
    distributed::DistributedDataParallel<float> ddp(world, m);
    optim::SGD<float> opt(m.parameters(), 0.01f);
    std::vector<std::size_t> idx(128);
    for (std::size_t i = 0; i < 128; ++i) idx[i] = 128 * static_cast<std::size_t>(world.rank()) + i;
    for (int step = 0; step < 200000; ++step) {
        if (step == 5 && world.rank() == 1) {
            std::fprintf(stderr, "rank 1: %s at step 5\n", name == "hang" ? "hanging" : "raising SIGKILL");
            std::fflush(stderr);
            if (name == "hang") std::this_thread::sleep_for(std::chrono::seconds(300));
            else std::raise(SIGKILL);
        }
        m.zero_grad();
        ddp.step(128, 256, [&] {
            Tensor<float> xb, yb;
            data::gather_rows(d.x, idx.data(), 128, xb);
            data::gather_rows(d.y, idx.data(), 128, yb);
            Tape<float> t;
            const Var<float> l = loss::binary_cross_entropy_with_logits(m(t.view(xb)), t.view(yb));
            backward(l);
            return l.item();
        });
        opt.step();
    }
    std::printf("rank %d: the training loop ended although rank 1 stopped\n", world.rank());
    return 0;
}

struct Outcome {
    bool ended = false;  // before the watchdog
    int status = 0;      // waitpid's
    double seconds = 0.0;
    std::string output;  // stdout and stderr of mpirun and the ranks
};

/// Runs argv with extra environment variables, collecting its output, for at most `limit`
/// seconds; past that its process group (mpirun and the ranks) is killed.
Outcome run(const std::vector<std::string>& args, const std::vector<std::string>& env, double limit) {
    Outcome r;
    int fds[2];
    if (pipe(fds) != 0) return r;
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
        std::vector<char*> av;
        for (const std::string& a : args) av.push_back(const_cast<char*>(a.c_str()));
        av.push_back(nullptr);
        execvp(av[0], av.data());
        std::perror("exec");
        _exit(127);
    }
    setpgid(pid, pid);
    close(fds[1]);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    bool open = true;
    for (;;) {
        if (open) {
            pollfd p{fds[0], POLLIN, 0};
            poll(&p, 1, 100);
            char buf[4096];
            ssize_t n = 0;
            while ((n = read(fds[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<std::size_t>(n));
            if (n == 0) open = false;
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        const pid_t w = waitpid(pid, &r.status, WNOHANG);
        if (w == pid) {
            r.ended = true;
            break;
        }
        if (elapsed() > limit) {
            kill(-pid, SIGKILL);
            waitpid(pid, &r.status, 0);
            break;
        }
    }
    r.seconds = elapsed();
    char buf[4096];
    ssize_t n = 0;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<std::size_t>(n));
    close(fds[0]);
    return r;
}

int failures = 0;

void expect(bool ok, const std::string& what, const Outcome& r) {
    if (ok) return;
    ++failures;
    std::printf("FAILED: %s\n--- output ---\n%s\n--------------\n", what.c_str(), r.output.c_str());
}

/// One scenario under mpirun: it must end within the limit, with a non-zero status (unless told
/// otherwise), and its output must contain every one of `needles`.
void check(const std::string& mpirun, const std::string& self, const std::string& name, const std::vector<std::string>& mpirun_opts,
           const std::vector<std::string>& env, const std::vector<std::string>& needles, bool nonzero = true) {
    const double limit = 60.0;
    std::vector<std::string> args{mpirun, "-np", "2", "--oversubscribe"};
    args.insert(args.end(), mpirun_opts.begin(), mpirun_opts.end());
    for (const std::string& e : env) args.insert(args.end(), {"-x", e.substr(0, e.find('='))});
    args.insert(args.end(), {self, "--scenario", name == "kill-recovery" ? "kill" : name});
    const Outcome r = run(args, env, limit);
    std::printf("%s: %s after %.1f s, %s\n", name.c_str(), r.ended ? "ended" : "still running", r.seconds,
                !r.ended ? "killed by the watchdog"
                         : (WIFEXITED(r.status) ? ("exit status " + std::to_string(WEXITSTATUS(r.status))).c_str() : "killed by a signal"));
    expect(r.ended, name + ": the job did not end within " + std::to_string(static_cast<int>(limit)) + " s", r);
    if (nonzero) expect(!(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0), name + ": the job ended with exit status 0", r);
    for (const std::string& n : needles) expect(r.output.find(n) != std::string::npos, name + ": the output does not contain '" + n + "'", r);
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--scenario") return scenario(argc, argv, argv[2]);
    if (argc != 2) {
        std::fprintf(stderr, "usage: test_distributed_faults MPIRUN | --scenario kill|hang\n");
        return 2;
    }
    char self[4096] = {0};
    if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) {
        std::fprintf(stderr, "test_distributed_faults: cannot read /proc/self/exe\n");
        return 2;
    }
    const std::string mpirun = argv[1];
    // OpenMPI's own message when a rank dies: "mpirun noticed that process rank 1 with PID ...
    // on node ... exited on signal 9 (Killed)."
    check(mpirun, self, "kill", {}, {}, {"rank 1: raising SIGKILL at step 5", "process rank 1", "signal 9"});
    check(mpirun, self, "hang", {}, {"TAPIR_MPI_TIMEOUT=5"},
          {"rank 1: hanging at step 5", "tapir: rank 0: MPI_Allreduce (error check) did not complete within 5 s"});
    // mpirun --enable-recovery (OpenMPI 4.1) exits with status 0 even after MPI_Abort, and its
    // own MPI_ABORT notice is not always printed: the timeout's message and the end of the job
    // are what is checked.
    check(mpirun, self, "kill-recovery", {"--enable-recovery"}, {"TAPIR_MPI_TIMEOUT=5"},
          {"rank 1: raising SIGKILL at step 5", "tapir: rank 0: MPI_Allreduce (error check) did not complete within 5 s"},
          false);
    std::printf("%s\n", failures ? "test_distributed_faults: FAILED" : "test_distributed_faults: all scenarios ended as expected");
    return failures ? 1 : 0;
}
