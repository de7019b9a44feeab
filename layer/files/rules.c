/* rules.c - which rule decides a path: the session's rules (regular
 * expressions it compiled, session/files.py), run here by a Pike VM.
 *
 * The VM keeps the set of ops every way through the program could be at
 * after each byte, so it reads each byte once and needs no backtracking or
 * memory beyond three small arrays a rule; it only says whether the rule
 * matches.  The rules are checked once when they arrive, so the matcher
 * can trust every index. */
#include "files/internal.h"

static unsigned char rules[TETHER_FILES_RULES_MAX]; /* the payload: header, rules, classes */
static const struct tether_files_rules *header;
static const unsigned char *classes;

typedef struct tether_files_op op_t;

unsigned char *tether_files_rules_buffer(unsigned long *size)
{
	*size = sizeof rules;
	return rules;
}

int tether_files_rules_set(unsigned long n)
{
	const struct tether_files_rules *h = (const void *)rules;
	unsigned long at = sizeof *h;

	if (n < sizeof *h || n > sizeof rules)
		return -1;
	if (h->fallback > TETHER_FILES_NOT_FOUND)
		return -1;
	for (unsigned r = 0; r < h->count; r++) {
		const struct tether_files_rule *rule = (const void *)(rules + at);
		const op_t *ops = (const void *)(rule + 1);

		if (at + sizeof *rule > n || rule->action > TETHER_FILES_NOT_FOUND || !rule->ops ||
		    rule->ops > TETHER_FILES_OPS_MAX || at + sizeof *rule + rule->ops * sizeof *ops > n)
			return -1;
		for (unsigned i = 0; i < rule->ops; i++) {
			unsigned char o = ops[i].op;

			if (o < TETHER_OP_BYTE || o > TETHER_OP_MATCH ||
			    ((o == TETHER_OP_SPLIT || o == TETHER_OP_JMP) && ops[i].x >= rule->ops) ||
			    (o == TETHER_OP_CLASS && ops[i].x >= h->classes) ||
			    (o != TETHER_OP_MATCH && o != TETHER_OP_JMP && i + 1 >= rule->ops))
				return -1; /* every op but MATCH and JMP goes on to a next one */
		}
		at += sizeof *rule + rule->ops * sizeof *ops;
	}
	if (at + h->classes * 32ul != n)
		return -1;
	classes = rules + at;
	__atomic_store_n(&header, h, __ATOMIC_RELEASE);
	return 0;
}

unsigned char tether_files_flags(void)
{
	return header ? header->flags : 0;
}

struct vm {
	unsigned char now[TETHER_FILES_OPS_MAX], next[TETHER_FILES_OPS_MAX];
	unsigned char seen[(TETHER_FILES_OPS_MAX + 7) / 8];
	unsigned char stack[TETHER_FILES_OPS_MAX];
};

/* Add pc and every op reachable from it without reading a byte (at byte
 * pos of n) to list; 1 if that reaches MATCH. */
static int add(struct vm *vm, const op_t *ops, unsigned char *list, unsigned *count, unsigned pc,
               const unsigned char *s, unsigned long pos, unsigned long n)
{
	unsigned top = 0;

	if (vm->seen[pc >> 3] & 1u << (pc & 7))
		return 0;
	vm->seen[pc >> 3] |= (unsigned char)(1u << (pc & 7));
	vm->stack[top++] = (unsigned char)pc;
	while (top) {
		unsigned at = vm->stack[--top], go[2], ways = 0;

		switch (ops[at].op) {
		case TETHER_OP_MATCH: return 1;
		case TETHER_OP_JMP: go[ways++] = ops[at].x; break;
		case TETHER_OP_SPLIT: go[ways++] = at + 1; go[ways++] = ops[at].x; break;
		case TETHER_OP_BOL:
			if (pos == 0)
				go[ways++] = at + 1;
			break;
		case TETHER_OP_EOL:
			if (pos == n || (ops[at].arg && pos + 1 == n && s[pos] == '\n'))
				go[ways++] = at + 1;
			break;
		default: list[(*count)++] = (unsigned char)at; /* reads a byte */
		}
		for (unsigned w = 0; w < ways; w++)
			if (!(vm->seen[go[w] >> 3] & 1u << (go[w] & 7))) {
				vm->seen[go[w] >> 3] |= (unsigned char)(1u << (go[w] & 7));
				vm->stack[top++] = (unsigned char)go[w];
			}
	}
	return 0;
}

static void unsee(struct vm *vm)
{
	for (unsigned i = 0; i < sizeof vm->seen; i++)
		vm->seen[i] = 0;
}

static int matches(const op_t *ops, const unsigned char *s, unsigned long n)
{
	struct vm vm;
	unsigned count = 0;

	unsee(&vm);
	if (add(&vm, ops, vm.now, &count, 0, s, 0, n))
		return 1;
	for (unsigned long pos = 0; pos < n && count; pos++) {
		unsigned next = 0;

		unsee(&vm);
		for (unsigned i = 0; i < count; i++) {
			const op_t *o = &ops[vm.now[i]];
			unsigned char c = s[pos];
			int takes = o->op == TETHER_OP_ANY || (o->op == TETHER_OP_BYTE && o->arg == c) ||
			            (o->op == TETHER_OP_CLASS && classes[o->x * 32u + c / 8] & 1u << (c & 7));

			if (takes && add(&vm, ops, vm.next, &next, vm.now[i] + 1u, s, pos + 1, n))
				return 1;
		}
		for (unsigned i = 0; i < next; i++)
			vm.now[i] = vm.next[i];
		count = next;
	}
	return 0;
}

int tether_files_decide(const unsigned char *path, unsigned long n, unsigned char *action)
{
	const struct tether_files_rules *h = __atomic_load_n(&header, __ATOMIC_ACQUIRE);
	const unsigned char *at;

	if (!h) {
		*action = TETHER_FILES_LOCAL;
		return -1;
	}
	at = (const unsigned char *)(h + 1);
	for (unsigned r = 0; r < h->count; r++) {
		const struct tether_files_rule *rule = (const void *)at;

		if (matches((const op_t *)(rule + 1), path, n)) {
			*action = rule->action;
			return (int)r;
		}
		at += sizeof *rule + rule->ops * sizeof(op_t);
	}
	*action = h->fallback;
	return -1;
}
