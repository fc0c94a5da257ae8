# libpeft — GNU make build.
#
#   make              library, peft command line, examples, benchmarks (under build/)
#   make check        every test suite (SAN=1: under AddressSanitizer + UBSan)
#   make bench        a short training benchmark (tiny GPT-2, LoRA; JSON); BENCH_ARGS= to change it
#   make bench-compare  libpeft against PyTorch on every workload (bench/compare.sh; QUICK=1)
#   make demo         the main job (see README.md)
#   make install      PREFIX=/usr/local DESTDIR= (headers, libraries, peft, peft.pc)
#   make deps         install the Debian packages the build needs (as root)

VERSION_H := include/peft/version.h
MAJOR := $(shell sed -n 's/^\#define PEFT_VERSION_MAJOR \([0-9]*\)/\1/p' $(VERSION_H))
MINOR := $(shell sed -n 's/^\#define PEFT_VERSION_MINOR \([0-9]*\)/\1/p' $(VERSION_H))
PATCH := $(shell sed -n 's/^\#define PEFT_VERSION_PATCH \([0-9]*\)/\1/p' $(VERSION_H))
VERSION := $(MAJOR).$(MINOR).$(PATCH)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=

CC ?= cc
CXX ?= c++
SAN ?= 0
PORTABLE ?= 0

ifeq ($(SAN),1)
BUILD ?= build/san
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SANLD := -fsanitize=address,undefined
else
BUILD ?= build
ifeq ($(PORTABLE),1)
OPT := -O2 -g
else
OPT := -O2 -g -march=native
endif
SANLD :=
endif

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CJSON_CFLAGS := $(shell pkg-config --cflags libcjson 2>/dev/null || echo -I/usr/include/cjson)
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -Iinclude $(CJSON_CFLAGS) -MMD -MP $(CFLAGS)
LIB_CFLAGS := $(CFLAGS_ALL) -fPIC -fvisibility=hidden -DPEFT_BUILD
LIBS_PRIVATE := -lopenblas -lcjson -lz -lm -lpthread
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -lpthread)

LIB_SRC := $(sort $(wildcard lib/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
STATIC := $(BUILD)/lib/libpeft.a
SHARED_REAL := $(BUILD)/lib/libpeft.so.$(VERSION)
SHARED := $(BUILD)/lib/libpeft.so

CLI_SRC := $(sort $(wildcard examples/peft/*.c))
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
CLI := $(BUILD)/bin/peft

EXAMPLE_SRC := $(sort $(wildcard examples/*.c))
EXAMPLES := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
CXX_EXAMPLE_SRC := $(sort $(wildcard examples/*.cpp))
CXX_EXAMPLES := $(CXX_EXAMPLE_SRC:examples/%.cpp=$(BUILD)/examples/%)

BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCHES := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

TEST_SUITES := $(sort $(filter-out tests/check_main.c,$(wildcard tests/check_*.c)))
TEST_SRC := tests/check_main.c $(TEST_SUITES) $(wildcard tests/util/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(BUILD)/tests/check_peft
SUITES_INC := $(BUILD)/tests/suites.inc

.SECONDARY:
.PHONY: all lib static shared cli examples bench bench-progs bench-compare check install uninstall clean deps demo \
        install-includes install-libs install-pc install-bin

all: lib cli examples bench-progs

lib: static shared
static: $(STATIC)
shared: $(SHARED)
cli: $(CLI)
examples: $(EXAMPLES) $(CXX_EXAMPLES)
bench-progs: $(BENCHES)

# Short by default (a few seconds); see docs/performance.md for the full comparison.
BENCH_ARGS ?= --arch gpt2 --layers 4 --d 256 --heads 4 --vocab 512 --batch 8 --seq 128 --strategy lora --steps 6 --threads 2
bench: $(CLI) $(BENCHES)
	$(CLI) bench $(BENCH_ARGS) --json

bench-compare: $(CLI)
	PEFT_CLI=$(CLI) sh bench/compare.sh

$(BUILD)/obj/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -I$(BUILD)/tests -Ilib -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(SHARED_REAL): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libpeft.so.$(MAJOR) $(SANLD) -o $@ $^ $(LIBS_PRIVATE) $(LDFLAGS)

$(SHARED): $(SHARED_REAL)
	ln -sf libpeft.so.$(VERSION) $(BUILD)/lib/libpeft.so.$(MAJOR)
	ln -sf libpeft.so.$(VERSION) $@

# Programs link the static library: one self-contained binary each.
$(CLI): $(CLI_OBJ) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SANLD) -o $@ $(CLI_OBJ) $(STATIC) $(LIBS_PRIVATE) $(LDFLAGS)

$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SANLD) -o $@ $< $(STATIC) $(LIBS_PRIVATE) $(LDFLAGS)

# C++ examples: the public headers as they are, compiled by $(CXX) and linked
# against the built library (tests/install.sh does the same through pkg-config).
$(CXX_EXAMPLES): $(BUILD)/examples/%: examples/%.cpp $(STATIC) $(wildcard include/peft/*.h)
	@mkdir -p $(dir $@)
	$(CXX) -std=c++11 $(OPT) -Wall -Wextra -Wshadow -Iinclude $(CXXFLAGS) $(SANLD) -o $@ $< $(STATIC) $(LIBS_PRIVATE) $(LDFLAGS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SANLD) -o $@ $< $(STATIC) $(LIBS_PRIVATE) $(LDFLAGS)

# The list of suites comes from the file names: tests/check_<name>.c defines
# Suite *<name>_suite(void). Adding a suite needs no edit here.
$(SUITES_INC): $(TEST_SUITES) Makefile
	@mkdir -p $(dir $@)
	@for f in $(TEST_SUITES); do n=$$(basename $$f .c); echo "SUITE($${n#check_})"; done > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(BUILD)/obj/tests/check_main.o: $(SUITES_INC)

# Tests link the static library so they can reach internal (hidden) kernels.
$(TEST_BIN): $(TEST_OBJ) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SANLD) -o $@ $(TEST_OBJ) $(STATIC) $(LIBS_PRIVATE) $(CHECK_LIBS) $(LDFLAGS)

# CK_DEFAULT_TIMEOUT: model tests take longer than Check's 4 s default.
check: $(TEST_BIN) $(SHARED) $(CLI) $(EXAMPLES) $(CXX_EXAMPLES)
	CK_DEFAULT_TIMEOUT=600 PEFT_BUILD_DIR=$(BUILD) PEFT_CLI=$(CLI) $(TEST_BIN)
	sh tests/symbols.sh $(SHARED_REAL)
	if [ "$(SAN)" != 1 ]; then sh tests/install.sh $(BUILD); fi

demo: deps all
	sh examples/demo.sh $(BUILD) $(MODEL)

deps:
	@sh tools/deps.sh

$(BUILD)/peft.pc: peft.pc.in $(VERSION_H)
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(LIBS_PRIVATE)|' $< > $(BUILD)/peft.pc

install: install-includes install-libs install-pc install-bin

install-includes:
	install -d $(DESTDIR)$(INCLUDEDIR)/peft
	install -m 644 include/peft/*.h $(DESTDIR)$(INCLUDEDIR)/peft/

install-libs: $(STATIC) $(SHARED)
	install -d $(DESTDIR)$(LIBDIR)
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED_REAL) $(DESTDIR)$(LIBDIR)/
	ln -sf libpeft.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libpeft.so.$(MAJOR)
	ln -sf libpeft.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libpeft.so

install-pc: $(BUILD)/peft.pc
	install -d $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(BUILD)/peft.pc $(DESTDIR)$(PKGCONFIGDIR)/peft.pc

install-bin: $(CLI)
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 $(CLI) $(DESTDIR)$(BINDIR)/peft
	if [ -f docs/peft.1 ]; then install -d $(DESTDIR)$(MANDIR)/man1 && \
	    install -m 644 docs/peft.1 $(DESTDIR)$(MANDIR)/man1/peft.1; fi

uninstall:
	rm -rf $(DESTDIR)$(INCLUDEDIR)/peft
	rm -f $(DESTDIR)$(LIBDIR)/libpeft.a $(DESTDIR)$(LIBDIR)/libpeft.so*
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/peft.pc $(DESTDIR)$(BINDIR)/peft $(DESTDIR)$(MANDIR)/man1/peft.1

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
