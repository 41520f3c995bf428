// kvtrain — one executable, git-style subcommands. Errors are exceptions, caught here and printed
// as one line; with several ranks the job is aborted so no rank waits forever (docs/design.md, "Distribution").
#include <cstdio>
#include <exception>
#include <new>

#include "dist/dist.h"
#include "tools/commands.h"
#include "tools/memory_check.h"

int main(int argc, char** argv) {
  kvt::DistContext ctx(&argc, &argv);
  kvt::cli::set_dist_context(&ctx);
  CLI::App app{"kvtrain: pretrain KV-lean transformers and train KV eviction gates"};
  app.require_subcommand(1);
  kvt::cli::add_prepare(app);
  kvt::cli::add_train(app);
  kvt::cli::add_bench(app);
  kvt::cli::add_inspect(app);
  kvt::cli::add_generate(app);
  kvt::cli::add_export(app);
  kvt::cli::add_gates(app);
  kvt::cli::add_eval(app);
  kvt::cli::add_import(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0 && ctx.world() > 1) ctx.abort(rc);
    return rc;
  } catch (const std::exception& e) {
    // An allocation the estimate did not foresee (or one run with --ignore-memory-limit) names
    // the command's allocation instead of printing "std::bad_alloc".
    const std::string& what = kvt::AllocationScope::current();
    const bool oom = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
    std::fprintf(stderr, "kvtrain: error%s: %s%s%s\n",
                 ctx.world() > 1 ? (" on rank " + std::to_string(ctx.rank())).c_str() : "",
                 oom ? "out of memory (std::bad_alloc) while allocating " : "",
                 oom ? (what.empty() ? "the command's buffers" : what.c_str()) : e.what(),
                 oom ? "; reduce the model or batch, or free memory" : "");
    std::fflush(stderr);
    if (ctx.world() > 1) ctx.abort(1);
    return 1;
  }
  return 0;
}
