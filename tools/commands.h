// tools/commands.h — each `kvtrain <subcommand>` lives in tools/cmd_<name>.cpp and adds itself
// to the CLI app here; its callback runs the command and throws on error (main prints one line).
#pragma once

#include <CLI/CLI.hpp>

#include "dist/dist.h"

namespace kvt::cli {

// The process's rank/world context, set by main() before any command runs.
void set_dist_context(DistContext* ctx);
DistContext& dist_context();

void add_prepare(CLI::App& app);  // tools/cmd_prepare.cpp
void add_train(CLI::App& app);    // tools/cmd_train.cpp
void add_bench(CLI::App& app);    // tools/cmd_bench.cpp
void add_inspect(CLI::App& app);  // tools/cmd_inspect.cpp
void add_generate(CLI::App& app);  // tools/cmd_generate.cpp
void add_export(CLI::App& app);    // tools/cmd_export.cpp
void add_gates(CLI::App& app);     // tools/cmd_gates.cpp
void add_eval(CLI::App& app);      // tools/cmd_eval.cpp
void add_import(CLI::App& app);    // tools/cmd_import.cpp

}  // namespace kvt::cli
