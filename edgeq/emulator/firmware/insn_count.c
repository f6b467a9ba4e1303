/* edgeq: a QEMU TCG plugin (plugin API version 1, QEMU 4.2-8.x) that counts executed guest
 * instructions exactly and records the count each time the firmware calls edgeq_mark(k).
 *
 * Self-contained: Debian ships no qemu-plugin.h, so the few declarations used are repeated
 * here from QEMU's include/qemu/qemu-plugin.h (API version 1).
 *
 * Arguments (-plugin insn_count.so,fn=0x..,fnend=0x..,marks=0x..,nmarks=N,out=PATH):
 *   fn..fnend    address range of edgeq_mark(): only its instructions get a store callback
 *   marks,nmarks address and length (words) of edgeq_marks[]: a store to edgeq_marks[k]
 *                records "k count" (count = instructions executed so far, the store included)
 *   out          the file the records and the final "total count" line are written to
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct {
  const char *target_name;
  struct { int min; int cur; } version;
  bool system_emulation;
  union { struct { int smp_vcpus; int max_vcpus; } system; };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef uint32_t qemu_plugin_meminfo_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info,
                                          uint64_t vaddr, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn,
                                                enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_mem_cb_t cb,
                                      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw,
                                      void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_outs(const char *string);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t count;  /* one vCPU: the mps boards have one core */
static uint64_t fn_lo, fn_hi, marks_lo, marks_hi;
static FILE *out;

static void on_store(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *u) {
  (void)vcpu; (void)info; (void)u;
  if (vaddr >= marks_lo && vaddr < marks_hi)
    fprintf(out, "%" PRIu64 " %" PRIu64 "\n", (vaddr - marks_lo) / 4, count);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  size_t n = qemu_plugin_tb_n_insns(tb);
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &count, 1);
    uint64_t pc = qemu_plugin_insn_vaddr(insn);
    if (pc >= fn_lo && pc < fn_hi)
      qemu_plugin_register_vcpu_mem_cb(insn, on_store, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_W,
                                       NULL);
  }
}

static void at_end(qemu_plugin_id_t id, void *u) {
  (void)id; (void)u;
  fprintf(out, "total %" PRIu64 "\n", count);
  fclose(out);
}

static bool arg(const char *a, const char *key, const char **value) {
  size_t k = strlen(key);
  if (strncmp(a, key, k) != 0 || a[k] != '=') return false;
  *value = a + k + 1;
  return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv) {
  (void)info;
  const char *v, *path = NULL;
  uint64_t nmarks = 0;
  for (int i = 0; i < argc; i++) {
    if (arg(argv[i], "fn", &v)) fn_lo = strtoull(v, NULL, 0);
    else if (arg(argv[i], "fnend", &v)) fn_hi = strtoull(v, NULL, 0);
    else if (arg(argv[i], "marks", &v)) marks_lo = strtoull(v, NULL, 0);
    else if (arg(argv[i], "nmarks", &v)) nmarks = strtoull(v, NULL, 0);
    else if (arg(argv[i], "out", &v)) path = v;
    else {
      qemu_plugin_outs("edgeq insn_count: unknown argument\n");
      return -1;
    }
  }
  marks_hi = marks_lo + 4 * nmarks;
  if (!path || !(out = fopen(path, "w"))) {
    qemu_plugin_outs("edgeq insn_count: cannot open the out= file\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, at_end, NULL);
  return 0;
}
