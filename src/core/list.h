/*
 * An intrusive doubly linked list.  The node lives inside the object it
 * links (found back with container_of), so linking allocates nothing and an
 * object leaves its list in O(1) without knowing which list that is.
 *
 * Circular, around a head that is a node of its own (a sentinel), so there
 * is no special case at either end.  Two zero states keep the users simple:
 * a zeroed head is an empty list (a struct that holds one may be made with
 * calloc or `= {0}`; the head links itself on the first push), and a zeroed
 * node is on no list.  list_remove zeroes the node again, which is what lets
 * ASSERT catch a node linked twice or removed twice.
 *
 * A non-empty list's head must not move (its first and last nodes point at
 * it): keep heads in objects that stay put.
 */
#ifndef MGATE_CORE_LIST_H
#define MGATE_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/util.h"

struct list_node {
    struct list_node *prev, *next;
};

static inline void list_init(struct list_node *head) { head->prev = head->next = head; }

static inline bool list_empty(const struct list_node *head) { return !head->next || head->next == head; }

/* Whether the node is on some list (a head never asks this). */
static inline bool list_linked(const struct list_node *node) { return node->next != NULL; }

static inline void list_insert_between(struct list_node *node, struct list_node *prev, struct list_node *next)
{
    ASSERT(!list_linked(node)); /* on one list at a time, once */
    ASSERT(prev->next == next && next->prev == prev);
    node->prev = prev;
    node->next = next;
    prev->next = node;
    next->prev = node;
}

static inline void list_push_back(struct list_node *head, struct list_node *node)
{
    if (!head->next)
        list_init(head);
    list_insert_between(node, head->prev, head);
}

static inline void list_push_front(struct list_node *head, struct list_node *node)
{
    if (!head->next)
        list_init(head);
    list_insert_between(node, head, head->next);
}

static inline void list_remove(struct list_node *node)
{
    ASSERT(list_linked(node));
    ASSERT(node->prev->next == node && node->next->prev == node);
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = NULL;
}

static inline struct list_node *list_first(const struct list_node *head)
{
    return list_empty(head) ? NULL : head->next;
}

static inline struct list_node *list_last(const struct list_node *head)
{
    return list_empty(head) ? NULL : head->prev;
}

static inline struct list_node *list_pop_front(struct list_node *head)
{
    struct list_node *n = list_first(head);
    if (n)
        list_remove(n);
    return n;
}

/* The object of type `type` whose member `member` is node, or NULL for NULL. */
#define list_entry(node, type, member) ((node) ? container_of(node, type, member) : (type *)NULL)

/*
 * Every node of head, in order; `pos` may be removed (and freed) in the
 * body, since the next one was read before.  Nodes other than the next
 * one may be removed too; the next one must not.
 */
#define list_for_each_safe(pos, tmp, head)                                                       \
    for ((pos) = list_empty(head) ? (head) : (head)->next, (tmp) = (pos)->next; (pos) != (head); \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
