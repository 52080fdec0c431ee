#!/usr/bin/env python3
"""Group a perf profile's samples of one process by what they were doing.

Usage: perf record -a -F 997 -g -o perf.data -- sleep 40   (while a bench row runs)
       perf script -i perf.data --pid PID -F ip,sym,dso | scripts/perf-groups.py [TOP]

Prints the share of samples per group (page fault, file write, fsync, futex,
net, ...; the first group whose kernel function is on the stack, else user)
and the TOP leaf functions. cpu-clock samples are time, not instructions:
this is where callgrind's counts and wall time disagree (BENCHMARKS.md,
sessions 20 and 21).
"""
import sys, collections
leaf=collections.Counter(); cat=collections.Counter(); n=0
cats=[('page fault','exc_page_fault'),('fadvise','fadvise'),('fdatasync/fsync','fsync'),('file write','ksys_write'),('file write','ext4_buffered_write'),('pwrite','ksys_pwrite'),
('munmap','munmap'),('mmap','do_mmap'),('madvise','madvise'),('brk','sys_brk'),('futex','futex'),('epoll','epoll'),('net send','sendmsg'),('net send','sock_write_iter'),('net recv','recvmsg'),('net recv','sock_read_iter'),('net recv','tcp_recv'),('statx','statx'),('other syscall','do_syscall_64'),('irq/softirq','irq'),]
stack=[]
def flush():
    global n
    if not stack: return
    n+=1; leaf[stack[0]]+=1
    joined=' '.join(stack)
    for name,key in cats:
        if key in joined: cat[name]+=1; break
    else:
        cat['user' if not stack[0].endswith('[kernel.kallsyms])') else 'kernel other']+=1
for line in sys.stdin:
    line=line.rstrip('\n')
    if not line.strip():
        flush(); stack=[]; continue
    parts=line.strip().split(None,1)
    if len(parts)==2: stack.append(parts[1])
flush()
print("samples",n)
for k,v in cat.most_common(): print(f"{100*v/n:5.1f}% {k}")
print('--- leaf')
for k,v in leaf.most_common(int(sys.argv[1]) if len(sys.argv)>1 else 35): print(f"{100*v/n:5.1f}% {k}")
