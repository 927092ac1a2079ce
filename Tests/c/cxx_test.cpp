// Tests/c/cxx_test.cpp - the C ABI from C++17: swccl.h included as is, communicators made by
// swcclCommInitAll and driven by std::thread, std::vector buffers, an RAII owner, error strings.
// Prints "N passed, M failed" (checks) last; exits non-zero on any failure.
#include <swccl.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {
int passed = 0, failed = 0;
void check(bool ok, const std::string& what) {
  if (ok) ++passed; else { ++failed; std::printf("FAIL %s: %s\n", what.c_str(), swcclGetLastError(nullptr)); }
}

struct CommDeleter { void operator()(swcclComm* c) const { swcclCommDestroy(c); } };
using Comm = std::unique_ptr<swcclComm, CommDeleter>;
}  // namespace

int main() {
  constexpr int n = 3;
  constexpr size_t count = 4096;
  swcclComm_t raw[n];
  check(swcclCommInitAll(raw, n, nullptr) == swcclSuccess, "swcclCommInitAll");
  std::vector<Comm> comms;
  for (auto c : raw) comms.emplace_back(c);
  std::vector<std::vector<float>> sums(n), gathered(n);
  std::vector<swcclResult_t> results(n * 2, swcclInternalError);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      std::vector<float> x(count);
      for (size_t i = 0; i < count; ++i) x[i] = static_cast<float>(r + static_cast<int>(i % 100));
      sums[r].resize(count);
      results[2 * r] = swcclAllReduce(x.data(), sums[r].data(), count, swcclFloat, swcclSum, comms[r].get(), nullptr);
      gathered[r].resize(count * n);
      results[2 * r + 1] = swcclAllGather(x.data(), gathered[r].data(), count, swcclFloat, comms[r].get(), nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    check(results[2 * r] == swcclSuccess && results[2 * r + 1] == swcclSuccess, "collectives on thread " + std::to_string(r));
    bool ok = true;
    for (size_t i = 0; i < count; ++i)
      ok = ok && sums[r][i] == static_cast<float>(n * (n - 1) / 2 + n * static_cast<int>(i % 100));
    check(ok, "allreduce result on rank " + std::to_string(r));
    ok = true;
    for (int q = 0; q < n; ++q)
      for (size_t i = 0; i < count; ++i) ok = ok && gathered[r][q * count + i] == static_cast<float>(q + static_cast<int>(i % 100));
    check(ok, "all-gather result on rank " + std::to_string(r));
  }
  // Errors come back as codes with text, never as C++ exceptions or crashes.
  float f = 0;
  check(swcclAllReduce(&f, &f, 1, static_cast<swcclDataType_t>(42), swcclSum, comms[0].get(), nullptr) == swcclInvalidArgument,
        "unknown type refused");
  check(std::string(swcclGetErrorString(swcclInvalidArgument)).find("invalid argument") != std::string::npos, "error string");
  comms.clear();  // destroys every communicator
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
