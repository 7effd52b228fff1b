// c10d behind a C ABI: the TCPStore, the key-value rendezvous torch.distributed starts from
// (`torchrun` and `init_process_group("env://")` put one on MASTER_ADDR:MASTER_PORT; rank 0
// hosts it, every rank connects), and the Gloo process group built over it, with the
// collectives Ember uses. Same conventions as ext.cpp: nullptr on success, else a malloc'd
// message freed with ember_ext_free; no C++ exception crosses into Rust. Tensors cross as tch's
// handles (`at::Tensor*`).
#include <chrono>
#include <mutex>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Logging.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// libtorch is built with Gloo; its header is guarded by the build's flag. The gloo headers it
// includes are csrc/gloo/ (declarations only: see csrc/gloo/names.h).
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "guard.h"

namespace {

struct Store {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// c10d's flight recorder keeps the last 2000 collectives, each with a stack trace, for torch's
// dump tools, which Ember does not offer. It costs a traceback per collective, and the first
// record of each group writes a map outside the recorder's lock: two groups recording at once
// (ranks that are threads of one process, as in the tests) corrupted it and spun forever (seen
// in FlightRecorder::recordWithResetEnabled). Off, unless the user sized its buffer.
void flight_recorder_off() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("TORCH_FR_BUFFER_SIZE") == nullptr &&
        std::getenv("TORCH_NCCL_TRACE_BUFFER_SIZE") == nullptr) {
      setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
    }
  });
}

// Runs one collective and waits for it; a failed or late peer throws, with c10d's message.
void run(Group* g, c10::intrusive_ptr<c10d::Work> work) {
  if (!work->wait(g->timeout)) throw std::runtime_error("the collective did not complete");
}

// c10d logs every retry of a connection, and the failure that ends it, with a C++ stack trace.
// Unless the user asked for a level (TORCH_CPP_LOG_LEVEL, as in PyTorch), log nothing: every
// failure reaches the user as the error Rust prints, without the trace.
void quiet_logs() {
  static const bool once = [] {
    if (std::getenv("TORCH_CPP_LOG_LEVEL") != nullptr) {
      c10::initLogging();
    } else {
      FLAGS_caffe2_log_level = 3;  // FATAL
    }
    return true;
  }();
  (void)once;
}

}  // namespace

extern "C" {

// Connects to (or, with is_server, hosts and waits for world_size members of) the store at
// host:port. Every operation, and the wait for the members, ends after timeout_ms.
char* ember_store_connect(const char* host, uint16_t port, bool is_server, int64_t world_size,
                          int64_t timeout_ms, void** out) {
  return ember::guarded([&] {
    quiet_logs();
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new Store{std::move(store)};
  });
}

void ember_store_free(void* store) { delete static_cast<Store*>(store); }

char* ember_store_set(void* store, const char* key, const uint8_t* data, size_t len) {
  return ember::guarded([&] {
    std::vector<uint8_t> value(data, data + len);
    static_cast<Store*>(store)->store->set(std::string(key), value);
  });
}

// The value of key (waiting for it up to the store's timeout), in *data (malloc'd; free it
// with ember_ext_free) and *len.
char* ember_store_get(void* store, const char* key, uint8_t** data, size_t* len) {
  return ember::guarded([&] {
    auto value = static_cast<Store*>(store)->store->get(std::string(key));
    *len = value.size();
    *data = static_cast<uint8_t*>(std::malloc(value.size() > 0 ? value.size() : 1));
    if (*data == nullptr) throw std::bad_alloc();
    if (!value.empty()) std::memcpy(*data, value.data(), value.size());
  });
}

// Adds delta to the integer at key (0 when absent) and returns the sum in *out.
char* ember_store_add(void* store, const char* key, int64_t delta, int64_t* out) {
  return ember::guarded([&] { *out = static_cast<Store*>(store)->store->add(std::string(key), delta); });
}

// A Gloo process group of `size` ranks over the store (keys under `prefix`), bound to `address`
// when it is not empty, else to the device torch.distributed would pick (GLOO_SOCKET_IFNAME, else
// this host's address, else loopback). Returns once every rank has connected to every other;
// each collective ends after timeout_ms.
char* ember_pg_gloo(void* store, const char* prefix, int rank, int size, int64_t timeout_ms,
                    const char* address, void** out) {
  return ember::guarded([&] {
    flight_recorder_off();
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    options->timeout = timeout;
    if (address[0] != '\0') {
      options->devices = {c10d::ProcessGroupGloo::createDeviceForHostname(std::string(address))};
    }
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), static_cast<Store*>(store)->store);
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, options);
    *out = new Group{std::move(backend), timeout};
  });
}

void ember_pg_free(void* group) { delete static_cast<Group*>(group); }

// Sums `tensor` over the ranks, in place.
char* ember_pg_allreduce_sum(void* group, at::Tensor* tensor) {
  return ember::guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    run(g, g->backend->allreduce(tensors, opts));
  });
}

// Copies root's `tensor` into every rank's, in place.
char* ember_pg_broadcast(void* group, at::Tensor* tensor, int root) {
  return ember::guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    run(g, g->backend->broadcast(tensors, opts));
  });
}

// Every rank's `input` (same shape on every rank) into `outputs[rank]`.
char* ember_pg_allgather(void* group, at::Tensor* input, at::Tensor* const* outputs, size_t n) {
  return ember::guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<std::vector<at::Tensor>> out(1);
    for (size_t i = 0; i < n; ++i) out[0].push_back(*outputs[i]);
    std::vector<at::Tensor> in{*input};
    run(g, g->backend->allgather(out, in));
  });
}

char* ember_pg_barrier(void* group) {
  return ember::guarded([&] {
    auto g = static_cast<Group*>(group);
    run(g, g->backend->barrier());
  });
}

// Starts summing `tensor` over the ranks, in place, and returns at once: *work is the pending
// collective, for ember_work_wait (which also frees it).
char* ember_pg_allreduce_sum_async(void* group, at::Tensor* tensor, void** work) {
  return ember::guarded([&] {
    auto g = static_cast<Group*>(group);
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    *work = new c10::intrusive_ptr<c10d::Work>(g->backend->allreduce(tensors, opts));
  });
}

// Waits for a collective ember_pg_allreduce_sum_async started, and frees it.
char* ember_work_wait(void* group, void* work) {
  auto w = static_cast<c10::intrusive_ptr<c10d::Work>*>(work);
  char* err = ember::guarded([&] { run(static_cast<Group*>(group), *w); });
  delete w;
  return err;
}

// A hook after a parameter's gradient accumulation (the post hook of its AccumulateGrad node, as
// DDP's reducer uses): calls on_ready(ctx, index) each time a backward pass has added to its
// gradient. It keeps the node alive (a parameter holds its accumulator weakly) and removes its
// hook when freed (ember_grad_hook_free).
struct GradHook {
  std::shared_ptr<torch::autograd::Node> node;
  uintptr_t key;
};

struct ReadyHook : torch::autograd::FunctionPostHook {
  void (*on_ready)(void*, size_t);
  void* ctx;
  size_t index;
  ReadyHook(void (*f)(void*, size_t), void* c, size_t i) : on_ready(f), ctx(c), index(i) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    on_ready(ctx, index);
    return outputs;
  }
};

char* ember_grad_hook(at::Tensor* param, void (*on_ready)(void*, size_t), void* ctx,
                      size_t index, void** out) {
  return ember::guarded([&] {
    auto node = torch::autograd::impl::grad_accumulator(*param);
    if (!node) throw std::runtime_error("the tensor is not a leaf that requires a gradient");
    auto key = node->add_post_hook(std::make_unique<ReadyHook>(on_ready, ctx, index));
    *out = new GradHook{std::move(node), key};
  });
}

void ember_grad_hook_free(void* hook) {
  auto h = static_cast<GradHook*>(hook);
  h->node->del_post_hook(h->key);
  delete h;
}

}  // extern "C"
