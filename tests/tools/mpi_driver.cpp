// mpi_driver — the per-step observer of data-parallel training that tests/test_mpi.cpp launches
// under mpirun. It drives the real Trainer step by step and writes, per rank, one line per step to
// OUT/rank<r>.txt:
//   step <s> loss <l> gnorm <g> same_params <0|1> same_grads <0|1> next <cursor> samples <i,j,...>
// (same_*: every rank holds bitwise what rank 0 holds after the step; samples: the global sample
// indices this rank read in the step). Rank 0 also writes the reduced gradient and the parameters
// after step s as raw float32 to OUT/grads_<s>.bin and OUT/params_<s>.bin.
//
//   mpi_driver --config FILE [--set section.key=value ...] --out DIR [--resume] [--stop-after N]
//
// --resume starts from the newest checkpoint of output.dir (an error when there is none);
// --stop-after N checkpoints after step N and exits. Fault injection: with KVT_TEST_FAIL_RANK=r
// and KVT_TEST_FAIL_STEP=s set, rank r throws after step s, as any rank-local error would; like
// kvtrain's main, the error is printed and, with several ranks, the job aborted.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/dist.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

// 1 when some rank's buffer differs bitwise from rank 0's.
int differs_from_rank0(kvt::Communicator& comm, const std::vector<float>& mine) {
  std::vector<float> root = mine;
  comm.broadcast(root.data(), root.size() * sizeof(float), 0);
  const int bad = std::memcmp(root.data(), mine.data(), mine.size() * sizeof(float)) != 0;
  return comm.max_flag(bad);
}

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  if (!out) throw std::runtime_error("cannot write " + path);
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

void drive(kvt::DistContext& ctx, const std::string& config, const std::vector<std::string>& sets,
           const std::string& out_dir, bool resume, int64_t stop_after) {
  const kvt::RunConfig cfg = kvt::load_run_config(config, sets);
  kvt::configure_threads(cfg.train.threads, ctx.local_size());
  auto comm = kvt::make_communicator(ctx, cfg.train.backend);
  kvt::Trainer tr(cfg, *comm);
  if (resume && !tr.resume_latest(std::cout))
    throw std::runtime_error("--resume: no checkpoint in " + cfg.output.dir);
  const int fail_rank = env_int("KVT_TEST_FAIL_RANK", -1), fail_step = env_int("KVT_TEST_FAIL_STEP", -1);
  const std::string rank_file = out_dir + "/rank" + std::to_string(ctx.rank()) + ".txt";
  std::ofstream log(rank_file, std::ios::app);
  if (!log) throw std::runtime_error("cannot write " + rank_file);
  while (tr.steps_done() < cfg.train.steps && (stop_after == 0 || tr.steps_done() < stop_after)) {
    const kvt::StepResult r = tr.step();
    const int64_t s = tr.steps_done();
    if (ctx.rank() == fail_rank && s == fail_step)
      throw std::runtime_error("injected failure after step " + std::to_string(s));
    const std::vector<float> params = tr.model().params_to_host(), grads = tr.model().grads_to_host();
    const int params_differ = differs_from_rank0(*comm, params);
    const int grads_differ = differs_from_rank0(*comm, grads);
    char head[160];
    std::snprintf(head, sizeof head, "step %lld loss %.9g gnorm %.9g same_params %d same_grads %d next %llu samples ",
                  static_cast<long long>(s), r.loss, r.grad_norm, !params_differ, !grads_differ,
                  static_cast<unsigned long long>(tr.next_sample()));
    log << head;
    const auto& samples = tr.last_step_samples();
    for (size_t i = 0; i < samples.size(); i++) log << (i ? "," : "") << samples[i];
    log << std::endl;
    if (ctx.rank() == 0) {
      write_floats(out_dir + "/grads_" + std::to_string(s) + ".bin", grads);
      write_floats(out_dir + "/params_" + std::to_string(s) + ".bin", params);
    }
  }
  if (stop_after > 0 && tr.steps_done() == stop_after) tr.save_checkpoint();
}

}  // namespace

int main(int argc, char** argv) {
  kvt::DistContext ctx(&argc, &argv);
  CLI::App app{"mpi_driver: per-step record of data-parallel training (tests)"};
  std::string config, out_dir;
  std::vector<std::string> sets;
  bool resume = false;
  int64_t stop_after = 0;
  app.add_option("--config", config)->required();
  app.add_option("--set", sets);
  app.add_option("--out", out_dir)->required();
  app.add_flag("--resume", resume);
  app.add_option("--stop-after", stop_after);
  try {
    app.parse(argc, argv);
    drive(ctx, config, sets, out_dir, resume, stop_after);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0 && ctx.world() > 1) ctx.abort(rc);
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_driver: error on rank %d: %s\n", ctx.rank(), e.what());
    std::fflush(stderr);
    if (ctx.world() > 1) ctx.abort(1);
    return 1;
  }
  return 0;
}
