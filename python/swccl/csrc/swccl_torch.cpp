// The C++ fast path of the torch.distributed backend "swccl" (python/swccl/torch.py).
//
// SwcclBackend is a c10d::Backend that torch's C++ ProcessGroup calls directly: the synchronous
// collectives of one dense contiguous CPU tensor (allreduce, broadcast, reduce, all_gather_single,
// reduce_scatter_single) and barrier run here, on the calling thread, without the GIL, straight into
// libswccl (stream NULL) when nothing of the group is in flight on the Python side. Everything else
// (async operations, the group's stream and its events, coalescing, lists, p2p, all-to-all,
// subgroups, errors of bad arguments, abort and shutdown) is delegated to the Python backend object
// (swccl.torch.ProcessGroupSwccl), so its semantics are the Python path's.
//
// Sharing the communicator with the Python side (Gate): a recursive mutex that whoever issues calls
// on the communicator holds meanwhile (the Python side takes it around its own library calls, with
// the GIL released while it waits), and a counter `busy` the Python side keeps above zero while
// anything of the group is in flight on its stream, a coalescing block is open, the group is closed,
// or the direct path is off (Options(direct=False), SWCCL_TORCH_DIRECT=0). A direct call takes the
// mutex, then runs only if busy is 0; else the call goes to Python, which enqueues it behind what is
// in flight (the order of the calls is the order of the operations). busy rises only under the
// mutex, so a direct call never overtakes an operation enqueued before it.
//
// The library's functions are resolved with dlsym from the handle of the libswccl.so the Python
// package loaded (ctypes), so there is one copy of the library in the process.
//
// Built by swccl/_torch_native.py with torch.utils.cpp_extension (once, cached).

#include <torch/extension.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <pybind11/chrono.h>
#include <pybind11/stl.h>

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "swccl.h"

namespace py = pybind11;

namespace swccl_torch {
namespace {  // (internal linkage: pybind11's types are hidden)

// The library calls of the direct path (resolved once per backend from the package's handle).
struct Lib {
  decltype(&swcclAllReduce) allReduce = nullptr;
  decltype(&swcclBroadcast) broadcast = nullptr;
  decltype(&swcclReduce) reduce = nullptr;
  decltype(&swcclAllGather) allGather = nullptr;
  decltype(&swcclReduceScatter) reduceScatter = nullptr;
  decltype(&swcclBarrier) barrier = nullptr;

  explicit Lib(uintptr_t handle) {
    void* h = reinterpret_cast<void*>(handle);
    resolve(h, "swcclAllReduce", allReduce);
    resolve(h, "swcclBroadcast", broadcast);
    resolve(h, "swcclReduce", reduce);
    resolve(h, "swcclAllGather", allGather);
    resolve(h, "swcclReduceScatter", reduceScatter);
    resolve(h, "swcclBarrier", barrier);
  }

  template <typename F>
  static void resolve(void* h, const char* name, F& out) {
    dlerror();
    void* p = dlsym(h, name);
    if (p == nullptr) {
      const char* why = dlerror();
      throw std::runtime_error(std::string("swccl: the loaded libswccl.so has no ") + name + ": " +
                               (why ? why : "symbol not found"));
    }
    out = reinterpret_cast<F>(p);
  }
};

// What the direct path and the Python side share (see the file comment).
struct Gate {
  std::recursive_mutex mu;
  std::atomic<int64_t> busy;
  std::atomic<uint64_t> direct{0};     // operations run on the direct path
  std::atomic<uint64_t> delegated{0};  // operations handed to the Python backend
  std::atomic<bool> recording{false};  // (tests) note the name of every operation of the direct path
  std::mutex recordMu;
  std::vector<std::string> record;

  explicit Gate(int64_t initial) : busy(initial) {}

  void note(const char* op) {
    if (recording.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(recordMu);
      record.emplace_back(op);
    }
  }

  // For the Python side: takes the mutex, the GIL released while it waits.
  void acquire() {
    if (mu.try_lock()) {
      return;
    }
    py::gil_scoped_release nogil;
    mu.lock();
  }
  void release() { mu.unlock(); }
};

// The Work of an operation that completed before the call returned: wait() returns or raises its
// error at once; the future is made when asked for, completed with the outputs or the error.
class DoneWork : public c10d::Work {
 public:
  DoneWork(std::vector<at::Tensor> outputs, std::exception_ptr error)
      : outputs_(std::move(outputs)), error_(std::move(error)) {}

  bool isCompleted() override { return true; }
  bool isSuccess() const override { return error_ == nullptr; }
  std::exception_ptr exception() const override { return error_; }
  std::vector<at::Tensor> result() override { return outputs_; }
  void synchronize() override {}
  bool wait(std::chrono::milliseconds /*timeout*/) override {
    if (error_) {
      std::rethrow_exception(error_);
    }
    return true;
  }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override {
    auto future = c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
    if (error_) {
      future->setError(error_);
    } else {
      future->markCompleted(c10::IValue(outputs_));
    }
    return future;
  }

 private:
  std::vector<at::Tensor> outputs_;
  std::exception_ptr error_;
};

// Releases a Python object from any thread (the GIL taken; nothing once the interpreter is gone).
static void dropPython(py::object& obj) {
  if (!obj) {
    return;
  }
  if (!Py_IsInitialized()) {
    obj.release();  // leaked on purpose: the interpreter is being torn down
    return;
  }
  py::gil_scoped_acquire gil;
  obj = py::object();
}

// The Work of an operation the Python backend ran: every Work method is the Python object's
// (swccl.torch.SwcclWork or its completed form), called with the GIL.
class PyWorkRef : public c10d::Work {
 public:
  explicit PyWorkRef(py::object work) : work_(std::move(work)) {}
  ~PyWorkRef() override { dropPython(work_); }

  bool isCompleted() override {
    py::gil_scoped_acquire gil;
    return work_.attr("is_completed")().cast<bool>();
  }
  bool isSuccess() const override {
    py::gil_scoped_acquire gil;
    return work_.attr("is_success")().cast<bool>();
  }
  std::exception_ptr exception() const override {
    py::gil_scoped_acquire gil;
    py::object e = work_.attr("exception")();
    if (e.is_none()) {
      return nullptr;
    }
    return std::make_exception_ptr(c10::DistBackendError(py::str(e).cast<std::string>()));
  }
  std::vector<at::Tensor> result() override {
    py::gil_scoped_acquire gil;
    py::object r = work_.attr("result")();
    try {
      return r.cast<std::vector<at::Tensor>>();
    } catch (const py::cast_error&) {
      return {};  // (a list of lists: all_gather's outputs)
    }
  }
  void synchronize() override { wait(std::chrono::milliseconds(0)); }
  bool wait(std::chrono::milliseconds timeout) override {
    py::gil_scoped_acquire gil;
    return work_.attr("wait")(timeout).cast<bool>();
  }
  // The Python work's future as a C++ future whose error is an error: torch.futures.Future.set_exception
  // completes its C++ future with the exception object as the value (only the Python wrapper that
  // set it raises it), so a C++ caller (DDP's reducer) or another Python wrapper would take the
  // exception for a result. Made once per work.
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override {
    py::gil_scoped_acquire gil;
    if (future_) {
      return future_;
    }
    py::object f = work_.attr("get_future")();
    auto source = f.cast<std::shared_ptr<torch::jit::PythonFutureWrapper>>()->fut;
    auto future = c10::make_intrusive<c10::ivalue::Future>(source->elementType());
    source->addCallback([future](c10::ivalue::Future& done) {
      if (done.hasError()) {
        future->setError(done.exception_ptr());
        return;
      }
      const c10::IValue& value = done.constValue();
      if (value.isPyObject()) {
        py::gil_scoped_acquire gil;
        auto obj = py::reinterpret_borrow<py::object>(value.toPyObject());
        if (PyExceptionInstance_Check(obj.ptr())) {
          future->setError(std::make_exception_ptr(c10::DistBackendError(py::str(obj).cast<std::string>())));
          return;
        }
      }
      future->markCompleted(value);
    });
    future_ = future;
    return future;
  }
  int sourceRank() const override {
    py::gil_scoped_acquire gil;
    return work_.attr("source_rank")().cast<int>();
  }

  py::object& python() { return work_; }

 private:
  py::object work_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;  // (guarded by the GIL)
};

// swcclDataType_t of a tensor that is reduced (bool reduces as uint8), or -1.
static int reduceType(at::ScalarType t) {
  switch (t) {
    case at::kChar: return swcclInt8;
    case at::kByte: return swcclUint8;
    case at::kBool: return swcclUint8;
    case at::kInt: return swcclInt32;
    case at::kUInt32: return swcclUint32;
    case at::kLong: return swcclInt64;
    case at::kUInt64: return swcclUint64;
    case at::kHalf: return swcclFloat16;
    case at::kFloat: return swcclFloat32;
    case at::kDouble: return swcclFloat64;
    case at::kBFloat16: return swcclBfloat16;
    case at::kFloat8_e4m3fn: return swcclFloat8e4m3;
    case at::kFloat8_e5m2: return swcclFloat8e5m2;
    default: return -1;
  }
}

// swcclRedOp_t of torch's operator on a tensor of type t, or -1 (PREMUL_SUM, bitwise ops and what
// makes no sense on bool go to the Python backend, which runs or refuses them).
static int reduceOp(const c10d::ReduceOp& op, at::ScalarType t) {
  bool isBool = t == at::kBool;
  switch (op.op_) {
    case c10d::ReduceOp::SUM: return isBool ? swcclMax : swcclSum;      // or
    case c10d::ReduceOp::PRODUCT: return isBool ? swcclMin : swcclProd; // and
    case c10d::ReduceOp::MAX: return swcclMax;
    case c10d::ReduceOp::MIN: return swcclMin;
    case c10d::ReduceOp::AVG: return isBool ? -1 : swcclAvg;
    default: return -1;
  }
}

// A tensor the direct path takes: dense, contiguous, on the CPU.
static bool plain(const at::Tensor& t) {
  return t.defined() && t.layout() == c10::kStrided && t.device().is_cpu() && t.is_contiguous();
}

static void* address(const at::Tensor& t) { return t.numel() ? t.data_ptr() : nullptr; }

static size_t bytes(const at::Tensor& t) { return static_cast<size_t>(t.numel()) * t.element_size(); }

class SwcclBackend : public c10d::Backend {
 public:
  SwcclBackend(py::object python, std::shared_ptr<Gate> gate, uintptr_t libHandle, uintptr_t comm, int rank,
               int size, int64_t timeoutMs)
      : c10d::Backend(rank, size),
        python_(std::move(python)),
        gate_(std::move(gate)),
        lib_(libHandle),
        comm_(reinterpret_cast<swcclComm_t>(comm)),
        timeout_(timeoutMs) {}

  ~SwcclBackend() override { dropPython(python_); }

  const std::string getBackendName() const override { return "swccl"; }
  bool supportsSplitting() const override { return true; }
  bool supportsCoalescing() const override { return true; }

  // The group's collective count (not p2p: the ranks of a pair call send and recv, not the same
  // operation), the same on every rank that issued the same collectives: what torch's
  // ProcessGroupWrapper (TORCH_DISTRIBUTED_DEBUG=DETAIL) fingerprints collectives with.
  uint64_t getSequenceNumberForGroup() override { return seq_.load(std::memory_order_relaxed); }
  void setSequenceNumberForGroup() override {}

  c10::intrusive_ptr<Options> getBackendOptions() override {
    auto o = c10::make_intrusive<Options>("swccl", timeout_);
    o->group_name = getGroupUid();
    return o;
  }

  // -- the direct path --

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    if (!opts.asyncOp && tensors.size() == 1 && !opts.sparseIndices.has_value()) {
      const at::Tensor& t = tensors[0];
      int type = reduceType(t.scalar_type());
      int op = type < 0 ? -1 : reduceOp(opts.reduceOp, t.scalar_type());
      if (op >= 0 && plain(t)) {
        void* p = address(t);
        auto size = static_cast<size_t>(t.numel());
        auto w = direct("allreduce", tensors, [&] { return lib_.allReduce(p, p, size, (swcclDataType_t)type, (swcclRedOp_t)op, comm_, nullptr); });
        if (w) {
          return w;
        }
      }
    }
    return delegate("allreduce", tensors, opts);
  }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    if (!opts.asyncOp && tensors.size() == 1 && opts.rootTensor == 0 && plain(tensors[0])) {
      const at::Tensor& t = tensors[0];
      void* p = address(t);
      size_t n = bytes(t);
      int root = static_cast<int>(opts.rootRank);
      auto w = direct("broadcast", tensors, [&] { return lib_.broadcast(p, p, n, swcclUint8, root, comm_, nullptr); });
      if (w) {
        return w;
      }
    }
    return delegate("broadcast", tensors, opts);
  }

  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    if (!opts.asyncOp && tensors.size() == 1 && opts.rootTensor == 0) {
      const at::Tensor& t = tensors[0];
      int type = reduceType(t.scalar_type());
      int op = type < 0 ? -1 : reduceOp(opts.reduceOp, t.scalar_type());
      if (op >= 0 && plain(t)) {
        void* p = address(t);
        auto size = static_cast<size_t>(t.numel());
        int root = static_cast<int>(opts.rootRank);
        auto w = direct("reduce", tensors, [&] { return lib_.reduce(p, p, size, (swcclDataType_t)type, (swcclRedOp_t)op, root, comm_, nullptr); });
        if (w) {
          return w;
        }
      }
    }
    return delegate("reduce", tensors, opts);
  }

  c10::intrusive_ptr<c10d::Work> all_gather_single(at::Tensor& output, at::Tensor& input,
                                                   const c10d::AllgatherOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    if (!opts.asyncOp && plain(input) && plain(output) && output.scalar_type() == input.scalar_type() &&
        output.numel() == input.numel() * getSize()) {
      void* pi = address(input);
      void* po = address(output);
      size_t n = bytes(input);
      std::vector<at::Tensor> outputs{output};
      auto w = direct("all_gather_into_tensor", outputs, [&] { return lib_.allGather(pi, po, n, swcclUint8, comm_, nullptr); });
      if (w) {
        return w;
      }
    }
    return delegate("_allgather_base", output, input, opts);
  }

  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts) override {
    return all_gather_single(output, input, opts);
  }

  c10::intrusive_ptr<c10d::Work> reduce_scatter_single(at::Tensor& output, at::Tensor& input,
                                                       const c10d::ReduceScatterOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    if (!opts.asyncOp && plain(input) && plain(output) && output.scalar_type() == input.scalar_type() &&
        input.numel() == output.numel() * getSize()) {
      int type = reduceType(output.scalar_type());
      int op = type < 0 ? -1 : reduceOp(opts.reduceOp, output.scalar_type());
      if (op >= 0) {
        void* pi = address(input);
        void* po = address(output);
        auto count = static_cast<size_t>(output.numel());
        std::vector<at::Tensor> outputs{output};
        auto w = direct("reduce_scatter_tensor", outputs, [&] { return lib_.reduceScatter(pi, po, count, (swcclDataType_t)type, (swcclRedOp_t)op, comm_, nullptr); });
        if (w) {
          return w;
        }
      }
    }
    return delegate("_reduce_scatter_base", output, input, opts);
  }

  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                      const c10d::ReduceScatterOptions& opts) override {
    return reduce_scatter_single(output, input, opts);
  }

  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    if (!opts.asyncOp) {
      auto w = direct("barrier", {}, [&] { return lib_.barrier(comm_, nullptr); });
      if (w) {
        return w;
      }
    }
    return delegate("barrier", opts);
  }

  // -- delegated to the Python backend --

  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(std::vector<at::Tensor>& tensors,
                                                     const c10d::AllreduceCoalescedOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("allreduce_coalesced", tensors, opts);
  }
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("allgather", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                     std::vector<at::Tensor>& inputs,
                                                     const c10d::AllgatherOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("allgather_coalesced", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> all_gather_single_coalesced(std::vector<at::Tensor>& outputs,
                                                             std::vector<at::Tensor>& inputs,
                                                             const c10d::AllgatherOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("allgather_into_tensor_coalesced", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> allgather_into_tensor_coalesced(std::vector<at::Tensor>& outputs,
                                                                 std::vector<at::Tensor>& inputs,
                                                                 const c10d::AllgatherOptions& opts) override {
    return all_gather_single_coalesced(outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("gather", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("scatter", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("reduce_scatter", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> reduce_scatter_single_coalesced(std::vector<at::Tensor>& outputs,
                                                                 std::vector<at::Tensor>& inputs,
                                                                 const c10d::ReduceScatterOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("reduce_scatter_tensor_coalesced", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> reduce_scatter_tensor_coalesced(std::vector<at::Tensor>& outputs,
                                                                 std::vector<at::Tensor>& inputs,
                                                                 const c10d::ReduceScatterOptions& opts) override {
    return reduce_scatter_single_coalesced(outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> all_to_all_single(at::Tensor& output, at::Tensor& input,
                                                   std::vector<int64_t>& outputSplits,
                                                   std::vector<int64_t>& inputSplits,
                                                   const c10d::AllToAllOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("alltoall_base", output, input, outputSplits, inputSplits, opts);
  }
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& outputSplits,
                                               std::vector<int64_t>& inputSplits,
                                               const c10d::AllToAllOptions& opts) override {
    return all_to_all_single(output, input, outputSplits, inputSplits, opts);
  }
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts) override {
    seq_.fetch_add(1, std::memory_order_relaxed);
    return delegate("alltoall", outputs, inputs, opts);
  }
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank, int tag) override {
    return delegate("send", tensors, dstRank, tag);
  }
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank, int tag) override {
    return delegate("recv", tensors, srcRank, tag);
  }
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override {
    return delegate("recv_anysource", tensors, tag);
  }

  void startCoalescing() override {
    py::gil_scoped_acquire gil;
    python_.attr("start_coalescing")();
  }
  c10::intrusive_ptr<c10d::Work> endCoalescing() override { return delegate("end_coalescing"); }

  void monitoredBarrier(const c10d::BarrierOptions& opts, bool waitAllRanks) override {
    py::gil_scoped_acquire gil;
    py::object timeout = py::none();
    if (opts.timeout.count() >= 0) {
      timeout = py::cast(opts.timeout);
    }
    python_.attr("monitored_barrier")(timeout, waitAllRanks);
  }

  void setTimeout(std::chrono::milliseconds timeout) override {
    py::gil_scoped_acquire gil;
    python_.attr("set_timeout")(timeout);
  }

  void setGroupUid(const std::string& uid) override {
    c10d::Backend::setGroupUid(uid);
    py::gil_scoped_acquire gil;
    python_.attr("setGroupName")(uid);
  }

  c10::intrusive_ptr<c10d::Backend> split(const c10::intrusive_ptr<c10d::Store>& store, const std::vector<int>& ranks,
                                          const c10::intrusive_ptr<Options>& opts) override {
    py::gil_scoped_acquire gil;
    py::object made = py::module::import("swccl.torch").attr("_native_split")(
        python_, store, ranks, opts ? py::cast(opts->timeout) : py::object(py::none()),
        opts ? py::cast(opts->group_name) : py::object(py::none()));
    if (made.is_none()) {
      return {};
    }
    return made.cast<c10::intrusive_ptr<c10d::Backend>>();
  }

  void abort() override {
    py::gil_scoped_acquire gil;
    python_.attr("abort")();
  }

  void shutdown() override {
    py::gil_scoped_acquire gil;
    python_.attr("shutdown")();
  }

  py::object& python() { return python_; }
  const std::shared_ptr<Gate>& gate() const { return gate_; }

 private:
  // Runs call() (one library call, stream NULL) if the Python side has nothing in flight; returns its
  // completed Work, or null when the operation must go to Python instead.
  template <typename Call>
  c10::intrusive_ptr<c10d::Work> direct(const char* op, std::vector<at::Tensor> outputs, Call&& call) {
    int result;
    {
      std::lock_guard<std::recursive_mutex> lock(gate_->mu);
      if (gate_->busy.load(std::memory_order_acquire) != 0) {
        return {};
      }
      result = call();
      gate_->direct.fetch_add(1, std::memory_order_relaxed);
    }
    gate_->note(op);
    std::exception_ptr error;
    if (result != swcclSuccess) {
      py::gil_scoped_acquire gil;  // the Python side words the error (rank, peer, cause; aborted)
      std::string text = python_.attr("_error_text")(op, result).cast<std::string>();
      error = std::make_exception_ptr(c10::DistBackendError(text));
    }
    return c10::make_intrusive<DoneWork>(std::move(outputs), std::move(error));
  }

  template <typename... Args>
  c10::intrusive_ptr<c10d::Work> delegate(const char* name, Args&&... args) {
    gate_->delegated.fetch_add(1, std::memory_order_relaxed);
    py::gil_scoped_acquire gil;
    py::object work = python_.attr(name)(std::forward<Args>(args)...);
    if (work.is_none()) {
      return {};
    }
    return c10::make_intrusive<PyWorkRef>(std::move(work));
  }

  py::object python_;
  std::shared_ptr<Gate> gate_;
  Lib lib_;
  swcclComm_t comm_;
  std::chrono::milliseconds timeout_;
  std::atomic<uint64_t> seq_{0};
};

static SwcclBackend* asSwccl(const c10::intrusive_ptr<c10d::Backend>& backend) {
  return dynamic_cast<SwcclBackend*>(backend.get());
}

}  // namespace
}  // namespace swccl_torch

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace swccl_torch;
  m.doc() = "The C++ fast path of the torch.distributed backend \"swccl\" (see swccl/torch.py)";

  py::class_<Gate, std::shared_ptr<Gate>>(m, "Gate")
      .def(py::init<int64_t>(), py::arg("busy") = 0)
      .def("acquire", &Gate::acquire)
      .def("release", &Gate::release)
      .def("add", [](Gate& g, int64_t delta) { return g.busy.fetch_add(delta) + delta; })
      .def_property_readonly("busy", [](const Gate& g) { return g.busy.load(); })
      .def_property_readonly("direct", [](const Gate& g) { return g.direct.load(); })
      .def_property_readonly("delegated", [](const Gate& g) { return g.delegated.load(); })
      .def("record", [](Gate& g, bool on) { g.recording.store(on); },
           "(tests) start or stop noting the operations the direct path runs")
      .def("recorded", [](Gate& g) {
            std::lock_guard<std::mutex> lock(g.recordMu);
            std::vector<std::string> out;
            out.swap(g.record);
            return out;
          }, "the operations the direct path ran since the last call, oldest first (and forgets them)");

  m.def(
      "make_backend",
      [](py::object python, std::shared_ptr<Gate> gate, uintptr_t libHandle, uintptr_t comm, int rank, int size,
         int64_t timeoutMs) -> c10::intrusive_ptr<c10d::Backend> {
        return c10::make_intrusive<SwcclBackend>(std::move(python), std::move(gate), libHandle, comm, rank, size,
                                                 timeoutMs);
      },
      "A swccl c10d::Backend over the Python backend `python` (swccl.torch.ProcessGroupSwccl) and its communicator");

  m.def(
      "python_backend",
      [](const c10::intrusive_ptr<c10d::Backend>& backend) -> py::object {
        auto* b = asSwccl(backend);
        return b ? b->python() : py::object(py::none());
      },
      "The Python backend object behind a swccl C++ backend (None for another backend)");

  m.def(
      "gate",
      [](const c10::intrusive_ptr<c10d::Backend>& backend) -> py::object {
        auto* b = asSwccl(backend);
        return b ? py::cast(b->gate()) : py::object(py::none());
      },
      "The Gate of a swccl C++ backend (None for another backend)");
}
