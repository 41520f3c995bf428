// tests/test_resources.cpp — running out of memory (docs/design.md, "Failures and resources"):
//  * the memory estimate (model/memory_estimate.h) equals what the constructors allocate, byte
//    for byte, measured at the allocator (posix_memalign is wrapped below), for every configs/
//    tiny*.yaml and odd GQA/MQA/LRKV/FusedKV/CLA/YOCO shapes;
//  * the memory available: /proc/meminfo and cgroup v1/v2 texts and trees, malformed ones too;
//  * the refusal through the CLI (train, bench, gates, generate, eval): one line with the numbers,
//    non-zero exit, nothing written; --ignore-memory-limit runs; a std::bad_alloc names the
//    allocation; `inspect --config` of a 65536-layer model under a small data-segment limit and a CPU
//    time limit.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "data/file_commit.h"
#include "kernels/ops.h"
#include "model/gates.h"
#include "model/inference.h"
#include "model/kv_cache.h"
#include "model/kv_sharing.h"
#include "model/memory_estimate.h"
#include "model/transformer.h"
#include "data/shard.h"
#include "tests/model_checks.h"
#include "tests/small_disk.h"
#include "tools/safetensors.h"
#include "tools/memory_check.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/config.h"

// ---- bytes requested from the allocator ----------------------------------------------------------
// The CPU backend's Ops::alloc is posix_memalign; this program's definition wraps libc's and
// adds up the sizes while counting is on.
namespace {
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_backend_bytes{0};
}  // namespace

extern "C" int posix_memalign(void** ptr, size_t alignment, size_t size) {
  using Fn = int (*)(void**, size_t, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "posix_memalign"));
  if (g_counting.load()) g_backend_bytes += size;
  return real(ptr, alignment, size);
}

namespace kvt {
namespace {

namespace fs = std::filesystem;

ModelConfig resolved_copy(ModelConfig c) {
  c.resolve();
  return c;
}

// Backend bytes allocated while f runs.
template <typename F>
uint64_t backend_bytes_of(F&& f) {
  g_backend_bytes = 0;
  g_counting = true;
  f();
  g_counting = false;
  return g_backend_bytes.load();
}

ModelConfig config_file(const std::string& name) {
  return load_run_config(std::string(KVT_SOURCE_DIR) + "/configs/" + name).model;
}

// Odd shapes: widths and lengths that are not multiples of the arenas' 16-float slots, every
// sharing scheme, GQA/MQA, LRKV, untied heads.
std::vector<std::pair<std::string, ModelConfig>> variant_configs() {
  std::vector<std::pair<std::string, ModelConfig>> out;
  for (const char* f : {"tiny.yaml", "tiny_cla.yaml", "tiny_fusedkv.yaml", "tiny_fusedkv_lite.yaml",
                        "tiny_gqa.yaml", "tiny_gqa_half.yaml", "tiny_long.yaml", "tiny_long_fusedkv.yaml",
                        "tiny_lrkv.yaml", "tiny_mqa.yaml", "tiny_yoco.yaml"})
    out.emplace_back(f, config_file(f));
  auto odd = [](int kv_heads, const std::string& sharing, int storage, int lrkv) {
    ModelConfig m;
    m.vocab_size = 257;
    m.d_model = 36;
    m.n_layers = 5;
    m.n_heads = 6;  // head_dim 6
    m.n_kv_heads = kv_heads;
    m.d_ff = 50;
    m.max_seq_len = 37;
    m.tie_embeddings = false;
    m.kv_sharing = sharing;
    m.storage_layers = storage;
    m.lrkv_rank = lrkv;
    return m;
  };
  out.emplace_back("gqa 6/3 untied", odd(3, "none", 0, 0));
  out.emplace_back("mqa", odd(1, "none", 0, 0));
  out.emplace_back("gqa 6/2 cla, 5 layers", odd(2, "cla", 0, 0));
  out.emplace_back("mqa yoco 3 of 5", odd(1, "yoco", 3, 0));
  out.emplace_back("gqa fusedkv 2 of 5", odd(3, "fusedkv", 2, 0));
  out.emplace_back("gqa fusedkv 5 of 5", odd(3, "fusedkv", 5, 0));
  out.emplace_back("fusedkv_lite 4 of 5", odd(2, "fusedkv_lite", 4, 0));
  out.emplace_back("lrkv rank 3", odd(0, "none", 0, 3));
  return out;
}

TEST(memoryEstimate, ParameterCountsEqualTheTables) {
  for (const auto& [name, cfg] : variant_configs()) {
    SCOPED_TRACE(name);
    EXPECT_EQ(parameter_count(cfg), build_param_table(cfg).total());
    EXPECT_EQ(gate_parameter_count(cfg), build_gate_param_table(resolved_copy(cfg)).total());
  }
}

TEST(memoryEstimate, TrainingBuffersEqualTheAllocations) {
  auto ops = make_ops("cpu");
  for (const auto& [name, cfg] : variant_configs()) {
    for (const auto& [B, T] : {std::pair{3, 13}, std::pair{1, 1}, std::pair{2, 32}}) {
      if (T > cfg.max_seq_len) continue;
      SCOPED_TRACE(name + " B " + std::to_string(B) + " T " + std::to_string(T));
      const MemoryEstimate e = estimate_bench_memory(cfg, B, T);
      std::unique_ptr<Transformer> model;
      const uint64_t model_bytes = backend_bytes_of([&] { model = std::make_unique<Transformer>(cfg, *ops, B, T, true); });
      EXPECT_EQ(model->activation_bytes(), e.activations);
      EXPECT_EQ(model_bytes, e.params + e.grads + e.activations);
      TrainConfig t;
      const uint64_t adam = backend_bytes_of([&] { AdamW opt(*ops, model->params(), t); });
      EXPECT_EQ(adam, e.optimizer);
      // Without gradients: no gradient buffer and no backward scratch.
      const uint64_t frozen = backend_bytes_of([&] { Transformer m(cfg, *ops, B, T, false); });
      EXPECT_EQ(frozen, e.params + transformer_activation_bytes(cfg, B, T, false));
      EXPECT_LT(transformer_activation_bytes(cfg, B, T, false), e.activations);
      // Training adds the checkpoint's host copies of parameters and both moments.
      EXPECT_EQ(estimate_train_memory(cfg, B, T).host_copies, 3 * e.params);
    }
  }
}

// Every recompute mode (model/recompute.h), with and without gradients, and the flash-statistics
// sizing: B H T floats per kept `att` instead of B H T T (one kept att with attention or block,
// L with none).
TEST(memoryEstimate, RecomputeModesEqualTheAllocations) {
  auto ops = make_ops("cpu");
  auto slot_bytes = [](uint64_t n) { return (n + 15) / 16 * 16 * sizeof(float); };
  for (const auto& [name, cfg] : variant_configs()) {
    const ModelConfig c = resolved_copy(cfg);
    for (const auto& [B, T] : {std::pair{3, 13}, std::pair{2, 32}}) {
      if (T > cfg.max_seq_len) continue;
      const uint64_t P = 4 * build_param_table(cfg).total();
      for (Recompute r : {Recompute::none, Recompute::attention, Recompute::block}) {
        for (bool grads : {true, false}) {
          SCOPED_TRACE(name + " B " + std::to_string(B) + " T " + std::to_string(T) + " " +
                       recompute_name(r) + (grads ? " with grads" : ""));
          const uint64_t est = transformer_activation_bytes(cfg, B, T, grads, r);
          std::unique_ptr<Transformer> model;
          const uint64_t bytes = backend_bytes_of(
              [&] { model = std::make_unique<Transformer>(cfg, *ops, B, T, grads, false, r); });
          EXPECT_EQ(model->activation_bytes(), est);
          EXPECT_EQ(bytes, P * (grads ? 2 : 1) + est);
          const uint64_t kept = r == Recompute::none ? c.n_layers : 1;
          const uint64_t probs = static_cast<uint64_t>(B) * c.n_heads * T * T, stats = static_cast<uint64_t>(B) * c.n_heads * T;
          EXPECT_EQ(transformer_activation_bytes(cfg, B, T, grads, r, false),
                    est - kept * (slot_bytes(probs) - slot_bytes(stats)));
        }
      }
      EXPECT_LT(transformer_activation_bytes(cfg, B, T, true, Recompute::block),
                transformer_activation_bytes(cfg, B, T, true, Recompute::attention));
      EXPECT_LT(transformer_activation_bytes(cfg, B, T, true, Recompute::attention),
                transformer_activation_bytes(cfg, B, T, true, Recompute::none));
    }
  }
}

TEST(memoryEstimate, Bench25mEqualsTheAllocation) {
  const ModelConfig cfg = config_file("bench_25m.yaml");
  auto ops = make_ops("cpu");
  const MemoryEstimate e = estimate_bench_memory(cfg, 2, 64);
  const uint64_t bytes = backend_bytes_of([&] {
    Transformer model(cfg, *ops, 2, 64, true);
    AdamW opt(*ops, model.params(), TrainConfig{});
  });
  EXPECT_EQ(bytes, e.params + e.grads + e.optimizer + e.activations);
  EXPECT_EQ(e.params, 4 * build_param_table(cfg).total());
}

TEST(memoryEstimate, InferenceAndGateBuffersEqualTheAllocations) {
  auto ops = make_ops("cpu");
  for (const auto& [name, cfg] : variant_configs()) {
    SCOPED_TRACE(name);
    const std::vector<float> host(parameter_count(cfg), 0.01f);
    for (int chunk : {0, 5, 1000}) {
      std::unique_ptr<InferenceModel> inf;
      const uint64_t bytes = backend_bytes_of([&] {
        inf = std::make_unique<InferenceModel>(cfg, *ops, host, InferenceOptions{chunk});
      });
      // The cache allocates as it fills: nothing yet, the estimate's bound once full.
      EXPECT_EQ(inf->kv_capacity_bytes(), 0u);
      // Host memory, not counted by the allocator hook: the keep flags (one byte per layer,
      // mask head and position) and one head's positions and scores [T].
      const uint64_t mask = static_cast<uint64_t>(cfg.n_layers) * inf->mask_heads() * inf->capacity();
      const uint64_t host_side = 2 * static_cast<uint64_t>(inf->capacity()) * 4;
      EXPECT_EQ(bytes, 4 * host.size() + inference_working_bytes(cfg, chunk) - mask - host_side);
      const std::vector<int32_t> tokens(static_cast<size_t>(inf->capacity()), 1);
      inf->prefill(tokens);
      EXPECT_EQ(inf->kv_capacity_bytes(), inference_cache_bytes(cfg));
    }
    const MemoryEstimate g = estimate_generate_memory(cfg);
    EXPECT_EQ(g.params, 4 * host.size());
    EXPECT_EQ(g.host_copies, 4 * host.size());
    for (const bool grads : {true, false}) {
      const uint64_t bytes = backend_bytes_of([&] { GateModel gm(cfg, *ops, 11, grads); });
      const uint64_t gp = 4 * gate_parameter_count(cfg);
      EXPECT_EQ(bytes, gp * (grads ? 2 : 1) + gate_activation_bytes(cfg, 11));
    }
  }
}

TEST(memoryEstimate, HugeConfigsSaturateInsteadOfWrapping) {
  ModelConfig m;
  m.n_layers = 1 << 20;
  m.d_model = 1 << 14;
  m.n_heads = 1 << 7;
  m.vocab_size = 1 << 30;
  m.max_seq_len = 1 << 30;
  const MemoryEstimate e = estimate_train_memory(m, 1 << 30, 1 << 30);  // B H T^2 L overflows 64 bits
  EXPECT_EQ(e.activations, UINT64_MAX);
  EXPECT_EQ(e.total(), UINT64_MAX);
  EXPECT_GT(e.params, uint64_t{1} << 50);  // 2^20 layers x 12 C^2 x 4 bytes: still exact
  EXPECT_EQ(e.params, 4 * parameter_count(m));
}

// ---- memory available ---------------------------------------------------------------------------

TEST(memoryAvailable, ParsesMeminfoAndCgroupFiles) {
  EXPECT_EQ(parse_meminfo_available("MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   22502028 kB\n"),
            uint64_t{22502028} * 1024);
  EXPECT_EQ(parse_meminfo_available("MemAvailable: 4096\n"), 4096u);  // no unit: bytes
  EXPECT_FALSE(parse_meminfo_available("MemTotal: 100 kB\n"));         // absent (kernels < 3.14)
  EXPECT_FALSE(parse_meminfo_available("MemAvailable: lots kB\n"));
  EXPECT_FALSE(parse_meminfo_available("MemAvailable: -5 kB\n"));
  EXPECT_FALSE(parse_meminfo_available("MemAvailable:\n"));
  EXPECT_FALSE(parse_meminfo_available("MemAvailable: 99999999999999999999999 kB\n"));
  EXPECT_FALSE(parse_meminfo_available(""));

  EXPECT_FALSE(parse_cgroup_limit("max\n"));
  EXPECT_FALSE(parse_cgroup_limit("9223372036854771712\n"));  // v1 without a limit
  EXPECT_EQ(parse_cgroup_limit("8589934592\n"), uint64_t{8589934592});
  EXPECT_THROW(parse_cgroup_limit("8G"), std::invalid_argument);
  EXPECT_THROW(parse_cgroup_limit(""), std::invalid_argument);
  EXPECT_EQ(parse_cgroup_counter(" 12345\n"), 12345u);
  EXPECT_THROW(parse_cgroup_counter("x"), std::invalid_argument);
  const std::string stat = "anon 100\nfile 50\ninactive_file 40\ntotal_inactive_file 7\nactive_file 10\n";
  EXPECT_EQ(parse_memory_stat(stat, "inactive_file"), 40u);
  EXPECT_EQ(parse_memory_stat(stat, "total_inactive_file"), 7u);
  EXPECT_EQ(parse_memory_stat(stat, "file"), 50u);
  EXPECT_EQ(parse_memory_stat(stat, "shmem"), 0u);
  EXPECT_EQ(parse_memory_stat("inactive_file many\n", "inactive_file"), 0u);
}

class CgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("kvt_test_cgroup_" + std::to_string(getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void put(const std::string& rel, const std::string& text) {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel) << text;
  }
  fs::path root_;
};

TEST_F(CgroupTree, V2TakesTheTightestAncestorLessReclaimableCache) {
  put("cgroup.controllers", "cpu memory\n");
  put("user.slice/memory.max", "10000000\n");      // 10 MB limit, 4 MB used of which 1 MB cache
  put("user.slice/memory.current", "4000000\n");
  put("user.slice/memory.stat", "anon 3000000\ninactive_file 1000000\n");
  put("user.slice/job/memory.max", "max\n");        // the process's own cgroup: unlimited
  put("user.slice/job/memory.current", "2000000\n");
  const std::string meminfo = "MemAvailable: 20000 kB\n";  // 20.48 MB
  MemoryAvailable a = memory_available_from(meminfo, "0::/user.slice/job\n", root_.string());
  ASSERT_TRUE(a.known);
  EXPECT_EQ(a.bytes, 10000000u - 3000000u);
  EXPECT_NE(a.source.find("user.slice"), std::string::npos) << a.source;
  // MemAvailable wins when smaller.
  a = memory_available_from("MemAvailable: 1000 kB\n", "0::/user.slice/job\n", root_.string());
  EXPECT_EQ(a.bytes, 1024000u);
  EXPECT_EQ(a.source, "MemAvailable");
  // A malformed limit leaves that cgroup out; usage above the limit leaves 0.
  put("user.slice/memory.max", "ten megabytes\n");
  a = memory_available_from(meminfo, "0::/user.slice/job\n", root_.string());
  EXPECT_EQ(a.bytes, 20480000u);
  put("user.slice/memory.max", "1000\n");
  a = memory_available_from(meminfo, "0::/user.slice/job\n", root_.string());
  EXPECT_EQ(a.bytes, 0u);
}

TEST_F(CgroupTree, V1AndHybridLayouts) {
  // v1: the memory controller's own hierarchy; hierarchical_memory_limit folds in the ancestors.
  put("memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");
  put("memory/docker/abc/memory.usage_in_bytes", "3000000\n");
  put("memory/docker/abc/memory.stat", "total_inactive_file 500000\nhierarchical_memory_limit 8000000\n");
  put("unified/cgroup.procs", "");
  const std::string cg = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/docker/abc\n";
  MemoryAvailable a = memory_available_from("MemAvailable: 100000 kB\n", cg, root_.string());
  ASSERT_TRUE(a.known);
  EXPECT_EQ(a.bytes, 8000000u - 2500000u);
  // A path the container cannot see under the mount: the mount's root counts.
  put("memory/memory.limit_in_bytes", "6000000\n");
  put("memory/memory.usage_in_bytes", "1000000\n");
  a = memory_available_from("MemAvailable: 100000 kB\n", "4:memory:/elsewhere/x\n", root_.string());
  EXPECT_EQ(a.bytes, 5000000u);
  // Nothing readable: unknown (no refusal).
  a = memory_available_from("garbage", "not a cgroup line\n", (root_ / "none").string());
  EXPECT_FALSE(a.known);
  EXPECT_EQ(memory_shortfall(estimate_bench_memory(config_file("tiny.yaml"), 1, 8), 1, false, a), "");
}

TEST(memoryAvailable, ShortfallNamesTheNumbers) {
  const MemoryEstimate e = estimate_train_memory(config_file("tiny.yaml"), 16, 128);
  const MemoryAvailable small{true, 1000000, "MemAvailable"};
  const std::string s = memory_shortfall(e, 1, false, small);
  for (const char* part : {"the run needs 173.9 MB", "params 5.3 MB", "grads 5.3 MB", "AdamW 10.6 MB",
                           "activations 136.7 MB at batch 16 x seq 128", "checkpoint copies 15.9 MB",
                           "1.0 MB available (MemAvailable)"})
    EXPECT_NE(s.find(part), std::string::npos) << part << " in " << s;
  EXPECT_NE(memory_shortfall(e, 4, false, small).find("4 ranks on this node"), std::string::npos);
  EXPECT_EQ(memory_shortfall(e, 1, false, {true, e.total(), "MemAvailable"}), "");
  // A device backend needs only the host copies on the host.
  EXPECT_EQ(memory_shortfall(e, 1, true, {true, e.host_copies, "MemAvailable"}), "");
}

// ---- through the command line -------------------------------------------------------------------

struct Child {
  bool exited = false;  // false: killed by a signal (or the hang guard)
  int code = -1, signal = 0;
  std::string out, err;
};

// Runs the kvtrain binary with extra environment and optional data-segment (RLIMIT_DATA) and CPU-time
// limits; stdout and stderr apart. A guard kills it after 300 s (a hang), reported as a signal.
Child run_cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
              rlim_t data_limit = 0, rlim_t cpu_seconds = 0) {
  const fs::path dir = fs::temp_directory_path() / ("kvt_test_resources_io_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string out = (dir / "out").string(), err = (dir / "err").string();
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(out.c_str(), "w", stdout) || !freopen(err.c_str(), "w", stderr)) _exit(126);
    setenv("OMP_NUM_THREADS", "1", 1);
    for (const std::string& kv : env) putenv(const_cast<char*>(kv.c_str()));
    if (data_limit) {
      const rlimit r{data_limit, data_limit};
      setrlimit(RLIMIT_DATA, &r);  // heap and anonymous maps: not the mapped CUDA libraries
    }
    if (cpu_seconds) {
      const rlimit r{cpu_seconds, cpu_seconds};
      setrlimit(RLIMIT_CPU, &r);
    }
    std::vector<char*> argv{const_cast<char*>(KVT_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(KVT_BINARY, argv.data());
    _exit(127);
  }
  int status = 0;
  const auto start = std::chrono::steady_clock::now();
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(300)) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Child c;
  c.exited = WIFEXITED(status);
  c.code = c.exited ? WEXITSTATUS(status) : -1;
  c.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  c.out = slurp(out);
  c.err = slurp(err);
  fs::remove_all(dir);
  return c;
}

size_t lines_of(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

// `kvtrain inspect --config` of 65536 layers: with 512 MiB of data segment (the process itself
// needs about 250 MiB; the parameter table of 590k tensors it built before took more) and 60 s of
// CPU time (it ran for minutes, quadratic in the tensors), it prints the estimate.
TEST(memoryCli, InspectOfAHugeConfigIsBoundedWork) {
  const Child c = run_cli({"inspect", "--config", std::string(KVT_SOURCE_DIR) + "/configs/tiny.yaml", "--set",
                           "model.n_layers=65536"},
                          {}, rlim_t{512} << 20, 60);
  ASSERT_TRUE(c.exited) << "killed by signal " << c.signal << " (SIGXCPU = CPU limit): " << c.err;
  ASSERT_EQ(c.code, 0) << c.err;
  // 65536 x (2 norms 2 C + attention 4 C^2 + MLP 3 F C) + embedding V C + final norm C.
  const uint64_t C = 128, F = 352, V = 4096;
  const uint64_t params = 65536 * (2 * C + 4 * C * C + 3 * F * C) + V * C + C;
  EXPECT_NE(c.out.find("parameters: " + std::to_string(params)), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("memory (train, one rank): "), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("grads 52.7 GB"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("memory available: "), std::string::npos) << c.out;
  EXPECT_LT(lines_of(c.out), 40u);  // no list of 590k tensors
}

TEST(memoryCli, InspectPrintsTheEstimateAndTheTensors) {
  const Child c = run_cli({"inspect", "--config", std::string(KVT_SOURCE_DIR) + "/configs/tiny.yaml"},
                          {"KVT_MEMORY_AVAILABLE_BYTES=123456789"});
  ASSERT_EQ(c.code, 0) << c.err;
  const MemoryEstimate e = estimate_train_memory(config_file("tiny.yaml"), 16, 128);
  EXPECT_NE(c.out.find("memory (train, one rank): " + format_bytes(e.total()) + " = " + memory_breakdown(e)),
            std::string::npos)
      << c.out;
  EXPECT_NE(c.out.find("memory available: 123.5 MB (KVT_MEMORY_AVAILABLE_BYTES)"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("model.layers.3.mlp.down_proj.weight"), std::string::npos);
}

// One trained model (prepare + 2 steps) for the commands that read a checkpoint.
class MemoryRefusal : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("kvt_test_resources_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    testutil::write_word_text((dir_ / "text.txt").string(), 400, 3);
    const Child prep = run_cli({"prepare", "--input", (dir_ / "text.txt").string(), "--out", (dir_ / "data").string(),
                                "--vocab-size", "300", "--val-fraction", "0.1", "--val-block", "0"});
    ASSERT_EQ(prep.code, 0) << prep.err;
    std::ofstream(config()) << "model: {vocab_size: 300, d_model: 32, n_layers: 2, n_heads: 4, max_seq_len: 112}\n"
                            << "train: {batch_size: 2, seq_len: 32, steps: 2, eval_every: 0, threads: 1}\n"
                            << "data: {train: '" << (dir_ / "data" / "*train*.bin").string() << "', val: '"
                            << (dir_ / "data" / "*val*.bin").string() << "', tokenizer: '"
                            << (dir_ / "data" / "tokenizer.model").string() << "'}\n"
                            << "output: {dir: '" << (dir_ / "model").string() << "'}\n";
    const Child tr = run_cli({"train", "--config", config()});
    ASSERT_EQ(tr.code, 0) << tr.err;
    const auto ck = list_checkpoints((dir_ / "model").string());
    ASSERT_FALSE(ck.empty());
    ckpt_ = ck.front();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string config() { return (dir_ / "model.yaml").string(); }

  // The refusal: exit 1 (not a signal), one line on stderr naming the subject, the parts, the
  // fake available memory and the flag; nothing on stdout.
  static void expect_refusal(const Child& c, const std::string& subject, const std::vector<std::string>& parts) {
    ASSERT_TRUE(c.exited) << "signal " << c.signal;
    EXPECT_EQ(c.code, 1);
    EXPECT_EQ(lines_of(c.err), 1u) << c.err;
    EXPECT_EQ(c.err.rfind("kvtrain: error: " + subject + ": the run needs ", 0), 0u) << c.err;
    for (const std::string& p : parts) EXPECT_NE(c.err.find(p), std::string::npos) << p << " in " << c.err;
    EXPECT_NE(c.err.find("1.0 kB available (KVT_MEMORY_AVAILABLE_BYTES); "), std::string::npos) << c.err;
    EXPECT_NE(c.err.find("or pass --ignore-memory-limit"), std::string::npos) << c.err;
  }

  static inline fs::path dir_;
  static inline std::string ckpt_;
  static inline const std::vector<std::string> kTiny{"KVT_MEMORY_AVAILABLE_BYTES=1000"};
};

TEST_F(MemoryRefusal, TrainRefusesAndWritesNothing) {
  const std::string run = (dir_ / "refused").string();
  const Child c = run_cli({"train", "--config", config(), "--set", "train.batch_size=16", "--set", "output.dir=" + run},
                          kTiny);
  expect_refusal(c, config(), {"params 145.5 kB, grads 145.5 kB, AdamW 291.1 kB, activations ", "at batch 16 x seq 32",
                               "checkpoint copies 436.6 kB", "; reduce train.batch_size or train.seq_len"});
  EXPECT_EQ(c.out, "");  // refused before the banner
  EXPECT_FALSE(fs::exists(run));
  // The same run with the flag trains and checkpoints.
  const Child ok = run_cli({"train", "--config", config(), "--set", "output.dir=" + run, "--ignore-memory-limit"}, kTiny);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_FALSE(list_checkpoints(run).empty());
}

TEST_F(MemoryRefusal, TrainRefusesAModelBiggerThanTheMachine) {
  // No fake limit: 65536 layers need about 1.8 TB against this machine's MemAvailable or cgroup.
  const std::string run = (dir_ / "huge").string();
  const Child c = run_cli({"train", "--config", config(), "--set", "model.n_layers=65536", "--set",
                           "output.dir=" + run});
  ASSERT_TRUE(c.exited);
  EXPECT_EQ(c.code, 1);
  EXPECT_EQ(lines_of(c.err), 1u) << c.err;
  EXPECT_NE(c.err.find("the run needs "), std::string::npos) << c.err;
  EXPECT_TRUE(c.err.find("(MemAvailable)") != std::string::npos || c.err.find("(cgroup") != std::string::npos)
      << c.err;
  EXPECT_NE(c.err.find("reduce model.n_layers or model.d_model"), std::string::npos) << c.err;
  EXPECT_FALSE(fs::exists(run));
}

TEST_F(MemoryRefusal, BenchRefusesAndTheFlagRunsIt) {
  const std::vector<std::string> args{"bench", "--config", config(), "--steps", "1", "--warmup", "0"};
  expect_refusal(run_cli(args, kTiny), config(), {"AdamW ", "activations "});
  std::vector<std::string> forced = args;
  forced.push_back("--ignore-memory-limit");
  const Child ok = run_cli(forced, kTiny);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.out.find("tokens/s"), std::string::npos) << ok.out;
}

TEST_F(MemoryRefusal, GenerateGatesAndEvalRefuse) {
  // KV cache: 2 layers x 2 x 32 floats x 128 positions (max_seq_len 112 in whole 64-position
  // blocks) x 4 bytes = 65.5 kB.
  expect_refusal(run_cli({"generate", "--checkpoint", ckpt_, "--prompt", "the lord"}, kTiny), ckpt_,
                 {"params 145.5 kB, KV cache 65.5 kB, activations ", "host copies 145.5 kB", "; use a smaller model"});
  const Child gen = run_cli({"generate", "--checkpoint", ckpt_, "--prompt", "the lord", "--max-new-tokens", "3",
                             "--ignore-memory-limit"},
                            kTiny);
  ASSERT_EQ(gen.code, 0) << gen.err;
  EXPECT_NE(gen.out.find("generate: "), std::string::npos);

  const std::string gate_run = (dir_ / "gates").string();
  const Child g = run_cli({"gates", "--checkpoint", ckpt_, "--set", "gates.context=16", "--set", "gates.steps=1",
                           "--set", "output.dir=" + gate_run},
                          kTiny);
  expect_refusal(g, ckpt_, {"params ", "grads ", "SGD momentum ", "activations ", "host copies "});
  EXPECT_FALSE(fs::exists(gate_run));

  expect_refusal(run_cli({"eval", "--checkpoint", ckpt_, "--context", "16", "--continuation", "4", "--contexts", "1",
                          "--policy", "full,kvzip", "--keep", "0.5"},
                         kTiny),
                 ckpt_, {"KV cache ", "activations "});
}

// With the check skipped, an allocation beyond the data-segment limit gives one line naming the
// allocation, not "std::bad_alloc" alone.
TEST_F(MemoryRefusal, BadAllocNamesTheAllocation) {
  const Child c = run_cli({"bench", "--config", config(), "--set", "train.batch_size=256", "--set",
                           "model.n_layers=64", "--steps", "1", "--warmup", "0", "--ignore-memory-limit"},
                          {}, rlim_t{768} << 20, 120);
  ASSERT_TRUE(c.exited) << "signal " << c.signal << ": " << c.err;
  EXPECT_EQ(c.code, 1);
  EXPECT_EQ(lines_of(c.err), 1u) << c.err;
  EXPECT_NE(c.err.find("kvtrain: error: out of memory (std::bad_alloc) while allocating bench of " + config() +
                       " (estimated "),
            std::string::npos)
      << c.err;
  EXPECT_NE(c.err.find("activations "), std::string::npos) << c.err;
}

// ---- a full disk: export and prepare --------------------------------------------------------------

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> temporaries_under(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) out.push_back(e.path().string());
  return out;
}

// Fills the disk until about `leave` bytes are free.
void fill_disk(const std::string& dir, uint64_t leave) {
  std::ofstream f(dir + "/filler", std::ios::binary);
  const std::string block(4096, 'x');
  while (free_bytes(dir) > leave + block.size() && f.write(block.data(), block.size())) f.flush();
}

void expect_disk_full(const Child& c, const std::string& file) {
  ASSERT_TRUE(c.exited) << "signal " << c.signal << ": " << c.err;
  EXPECT_EQ(c.code, 1);
  EXPECT_EQ(lines_of(c.err), 1u) << c.err;
  EXPECT_NE(c.err.find(file + ": no space left on device (needs "), std::string::npos) << c.err;
  EXPECT_NE(c.err.find(" free)"), std::string::npos) << c.err;
}

TEST_F(MemoryRefusal, ExportOnAFullDiskKeepsTheEarlierExport) {
  kvt::test::SmallDisk disk(1 << 20);
  ASSERT_TRUE(disk.ok()) << disk.reason();
  const std::string out = disk.dir() + "/hf";
  const Child first = run_cli({"export", "--checkpoint", ckpt_, "--out", out});
  ASSERT_EQ(first.code, 0) << first.err;
  const std::string weights = read_bytes(out + "/model.safetensors");
  ASSERT_GT(weights.size(), 100000u);
  fill_disk(disk.dir(), 20000);  // room for the small files, not for the weights
  const Child c = run_cli({"export", "--checkpoint", ckpt_, "--out", out, "--force"});
  expect_disk_full(c, out + "/model.safetensors");
  EXPECT_EQ(temporaries_under(disk.dir()), std::vector<std::string>{});
  EXPECT_EQ(read_bytes(out + "/model.safetensors"), weights);  // the earlier export is whole
  EXPECT_NO_THROW(SafetensorsReader r(out + "/model.safetensors"));
}

TEST_F(MemoryRefusal, PrepareOnAFullDiskKeepsTheEarlierShards) {
  kvt::test::SmallDisk disk(1 << 20);
  ASSERT_TRUE(disk.ok()) << disk.reason();
  const std::string out = disk.dir() + "/data";
  const std::string tok = (dir_ / "data" / "tokenizer.model").string();
  const std::vector<std::string> args{"prepare", "--input", (dir_ / "text.txt").string(), "--out", out,
                                      "--tokenizer", tok, "--val-fraction", "0.1", "--val-block", "0"};
  const Child first = run_cli(args);
  ASSERT_EQ(first.code, 0) << first.err;
  const std::string shard = out + "/data_train_000000.bin", stats = read_bytes(out + "/stats.json");
  const std::string tokens = read_bytes(shard);
  ASSERT_GT(tokens.size(), 4096u);
  fill_disk(disk.dir(), 1000);
  std::vector<std::string> again = args;
  again[6] = out + "/tokenizer.model";  // the copy there: nothing to copy
  const Child c = run_cli(again);
  expect_disk_full(c, shard);
  EXPECT_EQ(temporaries_under(disk.dir()), std::vector<std::string>{});
  EXPECT_EQ(read_bytes(shard), tokens);
  EXPECT_EQ(read_bytes(out + "/stats.json"), stats);
  EXPECT_NO_THROW(Shard s(shard, 300));
}

}  // namespace
}  // namespace kvt
