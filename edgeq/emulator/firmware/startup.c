// Minimal Cortex-M start-up for edgeq's emulator firmware on QEMU (mps2 / mps3 boards):
// a vector table, the FPU enabled, .bss zeroed, newlib's semihosting handles opened,
// constructors run, then main() and exit() (a semihosting SYS_EXIT that ends QEMU).
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __stack_top;
extern uint32_t __bss_start__, __bss_end__;
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);
extern int main(void);

void Reset_Handler(void);

// A fault ends the run with a message (SYS_WRITE0) and a failing SYS_EXIT.
static void semihost(uint32_t op, const void* arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

void Fault_Handler(void) {
  semihost(0x04, "EDGEQ error=hard_fault\n");
  semihost(0x18, (const void*)0x20023);  // ADP_Stopped_RunTimeErrorUnknown
  for (;;) {}
}

__attribute__((section(".vectors"), used)) void (*const edgeq_vectors[16])(void) = {
    (void (*)(void))(&__stack_top), Reset_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0,
    Fault_Handler, Fault_Handler,
};

void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  // CPACR: full access to CP10/CP11 (the FPU, and MVE on Cortex-M55).
  *(volatile uint32_t*)0xE000ED88 |= (0xFu << 20);
  __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
  for (uint32_t* p = &__bss_start__; p < &__bss_end__; ++p) *p = 0;
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}

// crti/crtn are not linked (-nostartfiles): __libc_init_array calls these.
void _init(void) {}
void _fini(void) {}
