// dist/mpi_check.h — MPI return codes as exceptions naming the call.
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace kvt {

inline void mpi_check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw std::runtime_error(std::string(what) + ": " + std::string(msg, len));
  }
}

}  // namespace kvt
