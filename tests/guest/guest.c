/*
 * rdmae test guest: a bare-metal multiboot program whose RAM checks itself.
 *
 * Loaded with QEMU's -kernel (32-bit protected mode, no paging, no
 * interrupts). It prints on COM1:
 *
 *   rdmae-guest: boot, RAM ... MiB, pattern ... pages ..., hot ... pages
 *   rdmae-guest: filled N pages
 *   tick N writes W pass P          about once a second (CMOS RTC)
 *   verify pass N ok (P pages)      after each full sweep
 *   VERIFY FAIL page P addr A word W: got X want Y (gen G)
 *   verify pass N FAIL (B bad pages)
 *
 * Memory from 2 MiB to the top of RAM (multiboot mem_upper) minus a 1 MiB
 * margin is filled with a pattern: in page p of generation g, word 0 holds
 * g, word 1 the page's address, and word i >= 2 seed(p, g) + i * K. A table
 * of each page's generation lives in RAM too (in .bss), so RAM describes
 * itself: a page that was not migrated, migrated from the wrong round, or
 * changed by a byte, no longer matches.
 *
 * Then it loops for ever: rewrite the next page of the hot set (the first
 * hot= KiB of the pattern) with its generation bumped, verify the next two
 * pages of a round-robin sweep over all pages, print a tick each second.
 * After a migration, a verify pass that completes on the destination and
 * started there has checked every page.
 *
 * Kernel command line (QEMU -append): hot=KIB (default 1024); zero=1 makes
 * every other generation of a hot page all zeros, so the hot set keeps
 * turning zero pages into data pages and back (multifd sends zero pages
 * as a flag, not as data: a destination that zero-fills a page late, or
 * not at all, shows here).
 */
#include <stddef.h>
#include <stdint.h>

#define COM1 0x3f8u
#define PAGE_SIZE 4096u
#define PAGE_WORDS (PAGE_SIZE / 4u)
#define PATTERN_START 0x200000u          /* 2 MiB, above the program */
#define TOP_MARGIN (1024u * 1024u)       /* left free below the top of RAM */
#define MAX_PAGES (512u * 256u)          /* 512 MiB of pattern at most */
#define VERIFY_PER_STEP 2u               /* pages verified per hot write */
#define MAX_FAIL_LINES 8u                /* VERIFY FAIL lines per pass */
#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_INFO_MEM (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)
#define WORD_STEP 0x9E3779B9u

/* Multiboot information: the words this program reads. */
#define MBI_FLAGS 0
#define MBI_MEM_UPPER 2
#define MBI_CMDLINE 4

void guest_main(uint32_t magic, uint32_t info_addr);

extern char guest_end[];                 /* linker script: end of .bss */

static uint32_t page_gen[MAX_PAGES];     /* generation of each pattern page */
static uint32_t npages;
static uint32_t hot_pages;
static uint32_t zero_churn;              /* zero=1: even hot generations are zero */

/* ---- port I/O and the serial console ---- */

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void serial_init(void)
{
	outb(COM1 + 1, 0x00);   /* no interrupts */
	outb(COM1 + 3, 0x80);   /* DLAB */
	outb(COM1 + 0, 0x01);   /* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);   /* 8N1 */
	outb(COM1 + 2, 0xC7);   /* FIFO on, cleared */
	outb(COM1 + 4, 0x03);   /* DTR, RTS */
}

static void putc_serial(char c)
{
	unsigned int spin;

	for (spin = 0; spin < 100000u && !(inb(COM1 + 5) & 0x20u); spin++)
		;
	outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
	for (; *s; s++) {
		if (*s == '\n')
			putc_serial('\r');
		putc_serial(*s);
	}
}

static void put_dec(uint32_t v)
{
	char buf[12];
	size_t i = sizeof(buf) - 1;

	buf[i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10u);
		v /= 10u;
	} while (v != 0 && i > 0);
	puts_serial(&buf[i]);
}

static void put_hex(uint32_t v)
{
	static const char digits[] = "0123456789abcdef";
	char buf[11];
	int i;

	buf[0] = '0';
	buf[1] = 'x';
	for (i = 0; i < 8; i++)
		buf[2 + i] = digits[(v >> (28 - 4 * i)) & 0xfu];
	buf[10] = '\0';
	puts_serial(buf);
}

/* ---- time: the CMOS RTC's seconds register ---- */

static uint8_t rtc_seconds(void)
{
	outb(0x70, 0x00);
	return inb(0x71);
}

/* ---- the pattern ---- */

static uint32_t mix32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	x ^= x >> 16;
	return x;
}

static uint32_t page_addr(uint32_t p)
{
	return PATTERN_START + p * PAGE_SIZE;
}

static volatile uint32_t *page_ptr(uint32_t p)
{
	return (volatile uint32_t *)(uintptr_t)page_addr(p);
}

static uint32_t page_seed(uint32_t p, uint32_t gen)
{
	return mix32(page_addr(p) ^ mix32(gen + 0x5bd1e995u));
}

/* A hot page's generation that is all zeros (zero=1); generation 1 never is. */
static int page_zero_gen(uint32_t p, uint32_t gen)
{
	return zero_churn && p < hot_pages && (gen & 1u) == 0;
}

static void write_page(uint32_t p)
{
	volatile uint32_t *w = page_ptr(p);
	uint32_t gen = page_gen[p];
	uint32_t v = page_seed(p, gen) + 2u * WORD_STEP;
	uint32_t i;

	if (page_zero_gen(p, gen)) {
		for (i = 0; i < PAGE_WORDS; i++)
			w[i] = 0;
		return;
	}

	w[0] = gen;
	w[1] = page_addr(p);
	for (i = 2; i < PAGE_WORDS; i++) {
		w[i] = v;
		v += WORD_STEP;
	}
}

/* Returns the index of the first bad word, or PAGE_WORDS if the page is good. */
static uint32_t check_page(uint32_t p, uint32_t *got, uint32_t *want)
{
	const volatile uint32_t *w = page_ptr(p);
	uint32_t gen = page_gen[p];
	uint32_t v = page_seed(p, gen) + 2u * WORD_STEP;
	uint32_t i;

	if (page_zero_gen(p, gen)) {
		for (i = 0; i < PAGE_WORDS; i++) {
			if (w[i]) {
				*got = w[i];
				*want = 0;
				return i;
			}
		}
		return PAGE_WORDS;
	}
	if (w[0] != gen) {
		*got = w[0];
		*want = gen;
		return 0;
	}
	if (w[1] != page_addr(p)) {
		*got = w[1];
		*want = page_addr(p);
		return 1;
	}
	for (i = 2; i < PAGE_WORDS; i++) {
		if (w[i] != v) {
			*got = w[i];
			*want = v;
			return i;
		}
		v += WORD_STEP;
	}
	return PAGE_WORDS;
}

/* ---- command line ---- */

/* The number in the word "KEY=NUMBER" of the command line, or dflt. */
static uint32_t cmdline_num(const char *s, const char *key, uint32_t dflt)
{
	while (s && *s) {
		const char *k = key;

		while (*s == ' ')
			s++;
		while (*k && *s == *k) {
			s++;
			k++;
		}
		if (!*k && *s == '=' && s[1] >= '0' && s[1] <= '9') {
			uint32_t v = 0;

			for (s++; *s >= '0' && *s <= '9'; s++)
				v = v * 10u + (uint32_t)(*s - '0');
			return v;
		}
		while (*s && *s != ' ')
			s++;
	}
	return dflt;
}

static void halt(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

void guest_main(uint32_t magic, uint32_t info_addr)
{
	const uint32_t *mbi = (const uint32_t *)(uintptr_t)info_addr;
	const char *cmdline = NULL;
	uint32_t ram_top, hot_kib, p, hot_next = 0, sweep = 0, bad = 0;
	uint32_t pass = 0, ticks = 0, writes = 0, got = 0, want = 0;
	uint8_t last_sec;

	serial_init();
	if (magic != MB_BOOT_MAGIC || !(mbi[MBI_FLAGS] & MB_INFO_MEM)) {
		puts_serial("rdmae-guest: not started by a multiboot loader with memory information\n");
		halt();
	}
	if ((uintptr_t)guest_end > PATTERN_START - 65536u) {
		puts_serial("rdmae-guest: program too large for a pattern at 2 MiB\n");
		halt();
	}
	if (mbi[MBI_FLAGS] & MB_INFO_CMDLINE)
		cmdline = (const char *)(uintptr_t)mbi[MBI_CMDLINE];
	hot_kib = cmdline_num(cmdline, "hot", 1024u);
	zero_churn = cmdline_num(cmdline, "zero", 0u) != 0;

	ram_top = 0x100000u + mbi[MBI_MEM_UPPER] * 1024u;
	if (ram_top < PATTERN_START + TOP_MARGIN + 16u * PAGE_SIZE) {
		puts_serial("rdmae-guest: too little RAM (need more than 3 MiB)\n");
		halt();
	}
	npages = (ram_top - TOP_MARGIN - PATTERN_START) / PAGE_SIZE;
	if (npages > MAX_PAGES)
		npages = MAX_PAGES;
	hot_pages = hot_kib / 4u;
	if (hot_pages == 0)
		hot_pages = 1;
	if (hot_pages > npages)
		hot_pages = npages;

	puts_serial("rdmae-guest: boot, RAM ");
	put_dec(ram_top >> 20);
	puts_serial(" MiB (mem_upper ");
	put_dec(mbi[MBI_MEM_UPPER]);
	puts_serial(" KiB), pattern ");
	put_hex(PATTERN_START);
	puts_serial("-");
	put_hex(page_addr(npages));
	puts_serial(" (");
	put_dec(npages);
	puts_serial(" pages, ");
	put_dec(npages / 256u);
	puts_serial(" MiB), hot ");
	put_dec(hot_pages);
	puts_serial(zero_churn ? " pages, every other generation zero\n" : " pages\n");

	for (p = 0; p < npages; p++) {
		page_gen[p] = 1;
		write_page(p);
	}
	puts_serial("rdmae-guest: filled ");
	put_dec(npages);
	puts_serial(" pages; running\n");

	last_sec = rtc_seconds();
	for (;;) {
		uint32_t k;
		uint8_t sec;

		page_gen[hot_next]++;
		write_page(hot_next);
		writes++;
		if (++hot_next == hot_pages)
			hot_next = 0;

		for (k = 0; k < VERIFY_PER_STEP; k++) {
			uint32_t w = check_page(sweep, &got, &want);

			if (w != PAGE_WORDS) {
				if (bad < MAX_FAIL_LINES) {
					puts_serial("VERIFY FAIL page ");
					put_dec(sweep);
					puts_serial(" addr ");
					put_hex(page_addr(sweep));
					puts_serial(" word ");
					put_dec(w);
					puts_serial(": got ");
					put_hex(got);
					puts_serial(" want ");
					put_hex(want);
					puts_serial(" (gen ");
					put_dec(page_gen[sweep]);
					puts_serial(")\n");
				}
				bad++;
			}
			if (++sweep == npages) {
				sweep = 0;
				pass++;
				puts_serial("verify pass ");
				put_dec(pass);
				if (bad == 0) {
					puts_serial(" ok (");
					put_dec(npages);
					puts_serial(" pages)\n");
				} else {
					puts_serial(" FAIL (");
					put_dec(bad);
					puts_serial(" bad pages)\n");
				}
				bad = 0;
			}
		}

		sec = rtc_seconds();
		if (sec != last_sec) {
			last_sec = sec;
			ticks++;
			puts_serial("tick ");
			put_dec(ticks);
			puts_serial(" writes ");
			put_dec(writes);
			puts_serial(" pass ");
			put_dec(pass);
			puts_serial("\n");
		}
	}
}
