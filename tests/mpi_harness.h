// tests/mpi_harness.h — launching `mpirun -np N` on kvtrain or tests/tools/mpi_driver from a
// test, and reading what the driver's ranks wrote (OUT/rank<r>.txt, OUT/grads_<s>.bin,
// OUT/params_<s>.bin; see tests/tools/mpi_driver.cpp). Used by test_mpi and test_zero; the
// including test defines KVT_MPIEXEC and KVT_MPI_DRIVER (tests/CMakeLists.txt).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/shard.h"
#include "model_checks.h"

namespace kvt::mpitest {

namespace fs = std::filesystem;
using namespace kvt::testutil;

using Clock = std::chrono::steady_clock;

inline fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("kvt_test_mpi_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}


// A tiny model; data.train and output.dir as given (relative paths resolve in each rank's cwd).
inline void write_config(const fs::path& file, const std::string& train_glob, const std::string& out_dir,
                  const std::string& train_extra) {
  std::ofstream(file) << "model: {vocab_size: 16, d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, max_seq_len: 32}\n"
                      << "train: {seq_len: 16, lr: 3.0e-3, warmup_steps: 1, grad_clip: 1.0, eval_every: 0,"
                      << " threads: 1, " << train_extra << "}\n"
                      << "data: {train: '" << train_glob << "'}\n"
                      << "output: {dir: '" << out_dir << "'}\n";
}

// ---- processes -----------------------------------------------------------------------------

struct Proc {
  pid_t pid = -1;
};

// Starts argv with stdout and stderr to `log`, in its own process group.
inline Proc start(const std::vector<std::string>& argv, const fs::path& log,
           const std::vector<std::pair<std::string, std::string>>& env = {}) {
  Proc p;
  std::fflush(nullptr);  // or the child's freopen writes the parent's pending output a second time
  p.pid = fork();
  if (p.pid == 0) {
    setpgid(0, 0);
    if (!freopen(log.c_str(), "w", stdout)) _exit(126);
    dup2(fileno(stdout), fileno(stderr));
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return p;
}

// Exit status (128 + signal when killed); -1 after killing the group on timeout.
inline int wait_for(Proc p, double timeout_s, double* took_s = nullptr) {
  const auto t0 = Clock::now();
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(p.pid, &status, WNOHANG);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (took_s) *took_s = dt;
    if (r == p.pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (dt > timeout_s) {
      kill(-p.pid, SIGKILL);
      waitpid(p.pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// mpirun with OpenMPI's flags for running as root on a 2-core machine, then the app contexts.
inline std::vector<std::string> mpirun(std::vector<std::string> rest) {
  std::vector<std::string> a = {KVT_MPIEXEC, "--allow-run-as-root", "--oversubscribe"};
  a.insert(a.end(), rest.begin(), rest.end());
  return a;
}

inline int run(const std::vector<std::string>& argv, const fs::path& log, double timeout_s = 60,
        const std::vector<std::pair<std::string, std::string>>& env = {}) {
  return wait_for(start(argv, log, env), timeout_s);
}

// ---- the driver's records ------------------------------------------------------------------

struct StepRec {
  int64_t step = 0;
  double loss = 0, gnorm = 0;
  int same_params = 0, same_grads = 0;
  uint64_t next = 0;
  std::vector<uint64_t> samples;
};

// OUT/rank<r>.txt -> step -> record
inline std::map<int64_t, StepRec> read_rank(const fs::path& out, int rank) {
  std::map<int64_t, StepRec> recs;
  std::ifstream in(out / ("rank" + std::to_string(rank) + ".txt"));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    StepRec r;
    std::string k, samples;
    ls >> k >> r.step >> k >> r.loss >> k >> r.gnorm >> k >> r.same_params >> k >> r.same_grads >> k >>
        r.next >> k >> samples;
    std::istringstream ss(samples);
    for (std::string v; std::getline(ss, v, ',');) r.samples.push_back(std::stoull(v));
    recs[r.step] = r;
  }
  return recs;
}

inline std::vector<float> read_floats(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing " << p;
  std::vector<float> v(fs::exists(p) ? fs::file_size(p) / sizeof(float) : 0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

inline double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// ||a - b|| / ||b||
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, n = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    n += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d / std::max(n, 1e-300));
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

struct Corpus {
  fs::path dir, config;
};

inline Corpus make_corpus(const std::string& name, const std::string& train_extra) {
  Corpus c;
  c.dir = fresh_dir(name);
  write_shard((c.dir / "c_train_000000.bin").string(), markov2_corpus(20000, 16, 11), 1);
  c.config = c.dir / "c.yaml";
  write_config(c.config, (c.dir / "*train*.bin").string(), (c.dir / "run").string(), train_extra);
  return c;
}

inline std::vector<std::string> driver(const Corpus& c, const fs::path& out, std::vector<std::string> extra = {}) {
  fs::create_directories(out);
  std::vector<std::string> a = {KVT_MPI_DRIVER, "--config", c.config.string(), "--out", out.string(),
                                "--set", "output.dir=" + (out / "run").string()};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

inline std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace kvt::mpitest
