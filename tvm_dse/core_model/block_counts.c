/*
 * tvm_dse's execution profiler: a QEMU TCG plugin (QEMU 7.2 API) counting how often every translated block
 * runs, with each block's code, written when the emulated program exits.
 *
 *   qemu-aarch64 -plugin libblock_counts.so,out=PROFILE.txt PROGRAM ...
 *
 * PROFILE.txt has one line per distinct block (start address and code): "VADDR INSNS EXECUTIONS HEX",
 * VADDR in hex, HEX the block's instruction bytes in memory order. A block translated more than once (QEMU
 * may flush and translate again) is one line, its executions summed. Counting is inline in the generated
 * code, so it costs an add per block executed; a single-threaded program is counted exactly (the counters
 * are not atomic across emulated threads).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    uint64_t vaddr;
    uint64_t executions; /* incremented by the generated code */
    size_t insns;
    size_t size;
    unsigned char *code;
} Block;

static Block **blocks;
static size_t count, capacity;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *out_path;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t insns = qemu_plugin_tb_n_insns(tb), size = 0, i;
    for (i = 0; i < insns; i++) {
        size += qemu_plugin_insn_size(qemu_plugin_tb_get_insn(tb, i));
    }
    Block *block = calloc(1, sizeof(Block));
    block->code = malloc(size ? size : 1);
    block->vaddr = qemu_plugin_tb_vaddr(tb);
    block->insns = insns;
    block->size = size;
    size = 0;
    for (i = 0; i < insns; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t bytes = qemu_plugin_insn_size(insn);
        memcpy(block->code + size, qemu_plugin_insn_data(insn), bytes);
        size += bytes;
    }
    pthread_mutex_lock(&lock);
    if (count == capacity) {
        capacity = capacity ? 2 * capacity : 4096;
        blocks = realloc(blocks, capacity * sizeof(Block *));
    }
    blocks[count++] = block;
    pthread_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->executions, 1);
}

static int by_block(const void *a, const void *b)
{
    const Block *x = *(Block *const *)a, *y = *(Block *const *)b;
    if (x->vaddr != y->vaddr) {
        return x->vaddr < y->vaddr ? -1 : 1;
    }
    if (x->size != y->size) {
        return x->size < y->size ? -1 : 1;
    }
    return memcmp(x->code, y->code, x->size);
}

static void write_profile(qemu_plugin_id_t id, void *data)
{
    FILE *out = fopen(out_path, "w");
    if (!out) {
        qemu_plugin_outs("block_counts: cannot write the profile\n");
        return;
    }
    qsort(blocks, count, sizeof(Block *), by_block);
    for (size_t i = 0; i < count;) {
        const Block *first = blocks[i];
        uint64_t executions = 0;
        for (; i < count && by_block(&first, &blocks[i]) == 0; i++) {
            executions += blocks[i]->executions;
        }
        if (executions == 0) {
            continue;
        }
        fprintf(out, "%" PRIx64 " %zu %" PRIu64 " ", first->vaddr, first->insns, executions);
        for (size_t j = 0; j < first->size; j++) {
            fprintf(out, "%02x", first->code[j]);
        }
        fputc('\n', out);
    }
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = strdup(argv[i] + 4);
        }
    }
    if (!out_path) {
        fprintf(stderr, "block_counts: give out=FILE, where the profile is written\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_profile, NULL);
    return 0;
}
