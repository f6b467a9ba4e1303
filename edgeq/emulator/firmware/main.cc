// edgeq emulator firmware: runs the embedded model on TensorFlow Lite Micro (CMSIS-NN kernels)
// over a batch of inputs streamed in through Arm semihosting, and streams the raw output bytes
// back. Built by edgeq (edgeq/emulator/build.py) with the sources `edgeq embed` writes.
//
// Protocol (files in QEMU's working directory, opened through semihosting):
//   in.bin  : "EDGQ" u32 version=1, u32 samples, u32 bytes_per_sample, then samples x bytes
//             (each sample: every input tensor's bytes, in input order)
//   out.bin : samples x (every output tensor's bytes, in output order)
//   stdout  : "EDGEQ key=value" lines (arena, tensor sizes, status)
//   ops.bin : only when built with EDGEQ_PRESERVE=1 (TFLM keeps every tensor): per sample, per
//             op of subgraph 0 in execution order, per output: u32 length, then its bytes
// Instruction counting: edgeq_mark(k) stores to edgeq_marks[k]; the QEMU plugin records the
// executed-instruction count at each such store (k=0 before Invoke, 1 after, 2+2i / 3+2i
// around the i-th op of that Invoke).
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tensorflow/lite/micro/memory_helpers.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include EDGEQ_MODEL_HEADER
#include EDGEQ_OPS_HEADER

#ifndef EDGEQ_PRESERVE
#define EDGEQ_PRESERVE 0
#endif

#ifndef EDGEQ_MARKS
#define EDGEQ_MARKS 4096
#endif

extern "C" {
volatile uint32_t edgeq_marks[EDGEQ_MARKS];
__attribute__((noinline)) void edgeq_mark(uint32_t k) {
  edgeq_marks[k % EDGEQ_MARKS] = k;
}
}

namespace {

class MarkProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char*) override {
    uint32_t handle = next_++;
    edgeq_mark(2 + 2 * handle);
    return handle;
  }
  void EndEvent(uint32_t handle) override { edgeq_mark(3 + 2 * handle); }
  void Reset() { next_ = 0; }

 private:
  uint32_t next_ = 0;
};

alignas(16) uint8_t tensor_arena[EDGEQ_ARENA_SIZE];
alignas(16) uint8_t sample[EDGEQ_MAX_SAMPLE_BYTES];

int fail(const char* what) {
  printf("EDGEQ error=%s\n", what);
  fflush(stdout);
  return 1;
}

bool read_all(int fd, void* buf, size_t n) {
  uint8_t* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    int got = read(fd, p, n);
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

bool write_all(int fd, const void* buf, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    int put = write(fd, p, n);
    if (put <= 0) return false;
    p += put;
    n -= static_cast<size_t>(put);
  }
  return true;
}

}  // namespace

int main() {
  const tflite::Model* model = tflite::GetModel(EDGEQ_MODEL_ARRAY);
  if (model->version() != TFLITE_SCHEMA_VERSION) return fail("schema_version");
  static tflite::MicroMutableOpResolver<EDGEQ_OP_COUNT> resolver;
  if (EDGEQ_REGISTER_OPS(resolver) != kTfLiteOk) return fail("register_ops");
  static MarkProfiler profiler;
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, EDGEQ_ARENA_SIZE,
                                              nullptr, &profiler, EDGEQ_PRESERVE != 0);
  if (interpreter.AllocateTensors() != kTfLiteOk) return fail("allocate_tensors");
  printf("EDGEQ arena_size=%u\n", static_cast<unsigned>(EDGEQ_ARENA_SIZE));
  printf("EDGEQ arena_used=%u\n", static_cast<unsigned>(interpreter.arena_used_bytes()));

  size_t in_bytes = 0, out_bytes = 0;
  for (size_t i = 0; i < interpreter.inputs_size(); ++i) in_bytes += interpreter.input(i)->bytes;
  for (size_t i = 0; i < interpreter.outputs_size(); ++i) out_bytes += interpreter.output(i)->bytes;
  printf("EDGEQ input_bytes=%u\n", static_cast<unsigned>(in_bytes));
  printf("EDGEQ output_bytes=%u\n", static_cast<unsigned>(out_bytes));
  if (in_bytes > sizeof(sample)) return fail("input_too_large");

  int in = open("in.bin", O_RDONLY | O_BINARY);
  if (in < 0) return fail("open_in");
  uint32_t header[4];
  if (!read_all(in, header, sizeof(header))) return fail("read_header");
  if (memcmp(header, "EDGQ", 4) != 0 || header[1] != 1) return fail("bad_header");
  if (header[3] != in_bytes) return fail("input_size_mismatch");
  int out = open("out.bin", O_WRONLY | O_CREAT | O_TRUNC | O_BINARY, 0644);
  if (out < 0) return fail("open_out");
#if EDGEQ_PRESERVE
  int ops = open("ops.bin", O_WRONLY | O_CREAT | O_TRUNC | O_BINARY, 0644);
  if (ops < 0) return fail("open_ops");
#endif

  const uint32_t samples = header[2];
  for (uint32_t s = 0; s < samples; ++s) {
    if (!read_all(in, sample, in_bytes)) return fail("read_sample");
    // The planner may reuse the input buffer for activations: copy every input in again.
    size_t at = 0;
    for (size_t i = 0; i < interpreter.inputs_size(); ++i) {
      TfLiteTensor* t = interpreter.input(i);
      memcpy(t->data.raw, sample + at, t->bytes);
      at += t->bytes;
    }
    profiler.Reset();
    edgeq_mark(0);
    TfLiteStatus status = interpreter.Invoke();
    edgeq_mark(1);
    if (status != kTfLiteOk) return fail("invoke");
    for (size_t i = 0; i < interpreter.outputs_size(); ++i) {
      TfLiteTensor* t = interpreter.output(i);
      if (!write_all(out, t->data.raw, t->bytes)) return fail("write_output");
    }
#if EDGEQ_PRESERVE
    const auto* operators = model->subgraphs()->Get(0)->operators();
    for (size_t k = 0; k < operators->size(); ++k) {
      const auto* outs = operators->Get(k)->outputs();
      for (size_t j = 0; j < outs->size(); ++j) {
        const int index = outs->Get(j);
        TfLiteEvalTensor* t = index >= 0 ? interpreter.GetTensor(index) : nullptr;
        size_t n = 0;
        if (t == nullptr || tflite::TfLiteEvalTensorByteLength(t, &n) != kTfLiteOk) n = 0;
        uint32_t len = static_cast<uint32_t>(n);
        if (!write_all(ops, &len, sizeof(len))) return fail("write_ops");
        if (n && !write_all(ops, t->data.raw, n)) return fail("write_ops");
      }
    }
#endif
  }
#if EDGEQ_PRESERVE
  close(ops);
#endif
  close(out);
  close(in);
  printf("EDGEQ samples=%u\n", static_cast<unsigned>(samples));
  printf("EDGEQ status=ok\n");
  fflush(stdout);
  return 0;
}
