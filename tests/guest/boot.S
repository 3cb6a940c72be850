/* rdmae test guest: multiboot (v1) header and entry point (32-bit protected
 * mode, paging off, interrupts off, as a multiboot loader leaves it).
 * The linker script puts .multiboot first: QEMU looks for the header in the
 * first 8 KiB of the file. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-aligned modules, memory information */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .text
	.globl _start
_start:
	cli
	movl $stack_top, %esp
	cld
	pushl %ebx		/* multiboot information */
	pushl %eax		/* multiboot magic */
	call guest_main
1:	hlt
	jmp 1b

	.section .bss
	.align 16
	.skip 16384
stack_top:

	.section .note.GNU-stack, "", @progbits
