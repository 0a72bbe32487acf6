# System calls the HPC VMM answers inside the guest, without a VM exit: the LSTAR entry.
# gettid, getpid, getcpu, sched_yield (when every thread has its own core), getrusage
# (RUSAGE_SELF/THREAD), times, clock_gettime/clock_getres (CLOCK_PROCESS_CPUTIME_ID,
# CLOCK_THREAD_CPUTIME_ID). Everything else, and every call whose pointer is not plainly
# user memory, jumps to the futex stub (and from there to the VMM's `out`).
#
# Per-vCPU clock slots (128 bytes, found with RDPID = TSC_AUX = vCPU index) and the group
# fields in VVAR are written by the VMM (see clocks.rs); times come from the TSC with the
# vDSO's parameters. No stack is touched (on VMX hosts this runs at CPL0 on the user stack):
# registers are saved in the slot's scratch area.
#
# Build: as --64 -o fc.o fastcall.s && objcopy -O binary -j .text fc.o fc.bin
    .intel_syntax noprefix
    .set VVAR, 0x71000
    .set TSC_BASE, VVAR
    .set MULT, VVAR+8
    .set MONO, VVAR+16
    .set F_FLAGS, VVAR+64
    .set F_PID, VVAR+72
    .set F_EXIT_USER, VVAR+80
    .set F_EXIT_SYS, VVAR+88
    .set F_SLOTS_END, VVAR+96
    .set F_MAXRSS, VVAR+104
    .set F_LO, VVAR+112
    .set F_BAD_HI, VVAR+120
    .set F_GSEQ, VVAR+128
    .set F_HI4, VVAR+136
    .set F_BL4, VVAR+144
    .set F_HI16, VVAR+152
    .set F_BL16, VVAR+160
    .set F_HI32, VVAR+168
    .set F_BL32, VVAR+176
    .set F_HI144, VVAR+184
    .set F_BL144, VVAR+192
    .set COUNT, 0x6004
    .set CSBYTE, 0x6008
    .set SLOTS, 0x72000

    .macro CHK reg, hi, bl
    cmp \reg, qword ptr [F_LO]
    jb slow
    cmp \reg, qword ptr [\hi]
    ja slow
    cmp \reg, qword ptr [\bl]
    jbe .Lok\@
    cmp \reg, qword ptr [F_BAD_HI]
    jb slow
.Lok\@:
    .endm

    # rax = now in ns (the vDSO's clock); clobbers rdx
    .macro NOW
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, qword ptr [TSC_BASE]
    mul qword ptr [MULT]
    shrd rax, rdx, 32
    add rax, qword ptr [MONO]
    .endm

    # r10 = slot -> r8 = user ns, r9 = system ns; clobbers rax, rcx, rdx
    .macro THREAD_NS
.Lt\@:
    mov rcx, qword ptr [r10]
    test cl, 1
    jnz .Lt\@
    mov r8, qword ptr [r10+16]
    mov r9, qword ptr [r10+32]
    cmp qword ptr [r10+40], 0
    je .Lu\@
    NOW
    sub rax, qword ptr [r10+24]
    jc .Lu\@
    add r8, rax
.Lu\@:
    cmp rcx, qword ptr [r10]
    jne .Lt\@
    .endm

    # r11 = own slot -> r8 = user ns, r9 = system ns of the whole group;
    # clobbers rax, rcx, rdx, rsi, rdi, r10
    .macro SELF_NS
.Lg\@:
    mov rdi, qword ptr [F_GSEQ]
    test dil, 1
    jnz .Lg\@
    mov qword ptr [r11+56], rdi
    mov rsi, qword ptr [F_EXIT_USER]
    mov rdi, qword ptr [F_EXIT_SYS]
    mov r10, SLOTS
.Ll\@:
    cmp r10, qword ptr [F_SLOTS_END]
    jae .Ld\@
    cmp dword ptr [r10+8], 0
    je .Ln\@
    THREAD_NS
    add rsi, r8
    add rdi, r9
.Ln\@:
    add r10, 128
    jmp .Ll\@
.Ld\@:
    mov rax, qword ptr [F_GSEQ]
    cmp rax, qword ptr [r11+56]
    jne .Lg\@
    mov r8, rsi
    mov r9, rdi
    .endm

    # save the registers into the own slot: r10 = r11 = own slot
    .macro SAVE
    rdpid rax
    shl eax, 7
    add rax, SLOTS
    mov qword ptr [rax+64], rcx
    mov qword ptr [rax+72], rdx
    mov qword ptr [rax+80], rsi
    mov qword ptr [rax+88], rdi
    mov qword ptr [rax+96], r8
    mov qword ptr [rax+104], r9
    mov qword ptr [rax+112], r10
    mov qword ptr [rax+120], r11
    mov r10, rax
    mov r11, rax
    .endm

    # restore from r11 = own slot (rax untouched)
    .macro RESTORE
    mov r10, r11
    mov rcx, qword ptr [r10+64]
    mov rdx, qword ptr [r10+72]
    mov rsi, qword ptr [r10+80]
    mov rdi, qword ptr [r10+88]
    mov r8, qword ptr [r10+96]
    mov r9, qword ptr [r10+104]
    mov r11, qword ptr [r10+120]
    mov r10, qword ptr [r10+112]
    .endm

    .text
start:
    .set FUTEX_STUB, start - 0x200
entry:
    test byte ptr [F_FLAGS], 1
    jz slow
    cmp eax, 186
    je gettid
    cmp eax, 39
    je getpid
    cmp eax, 228
    je cgt
    cmp eax, 98
    je getrusage
    cmp eax, 309
    je getcpu
    cmp eax, 100
    je times
    cmp eax, 24
    je yield
    cmp eax, 229
    je cgr
slow:
    jmp FUTEX_STUB

# rax = the result
done:
    lock inc dword ptr [COUNT]
    mov word ptr [CSBYTE], cs
    test byte ptr [CSBYTE], 3
    jnz 1f
    sysretq
1:  jmp rcx

gettid:
    rdpid rax
    shl eax, 7
    mov eax, dword ptr [rax+SLOTS+8]
    jmp done

getpid:
    mov eax, dword ptr [F_PID]
    jmp done

yield:
    test byte ptr [F_FLAGS], 2
    jz slow
    xor eax, eax
    jmp done

getcpu:
    test rdi, rdi
    jz 2f
    CHK rdi, F_HI4, F_BL4
2:  test rsi, rsi
    jz 3f
    CHK rsi, F_HI4, F_BL4
3:  rdpid rax
    shl eax, 7
    mov eax, dword ptr [rax+SLOTS+12]
    test rdi, rdi
    jz 4f
    mov dword ptr [rdi], eax
4:  test rsi, rsi
    jz 5f
    mov dword ptr [rsi], 0
5:  xor eax, eax
    jmp done

cgr:
    cmp edi, 2
    je 1f
    cmp edi, 3
    jne slow
1:  test rsi, rsi
    jz 2f
    CHK rsi, F_HI16, F_BL16
    mov qword ptr [rsi], 0
    mov qword ptr [rsi+8], 1
2:  xor eax, eax
    jmp done

cgt:
    cmp edi, 2
    je 1f
    cmp edi, 3
    jne slow
1:  CHK rsi, F_HI16, F_BL16
    SAVE
    cmp edi, 3
    jne 2f
    THREAD_NS
    jmp 3f
2:  SELF_NS
3:  mov rax, r8
    add rax, r9
    xor edx, edx
    mov ecx, 1000000000
    div rcx
    mov rsi, qword ptr [r11+80]
    mov qword ptr [rsi], rax
    mov qword ptr [rsi+8], rdx
    RESTORE
    xor eax, eax
    jmp done

times:
    test rdi, rdi
    jz 1f
    CHK rdi, F_HI32, F_BL32
1:  SAVE
    SELF_NS
    mov rdi, qword ptr [r11+88]
    mov ecx, 10000000
    test rdi, rdi
    jz 2f
    mov rax, r8
    xor edx, edx
    div rcx
    mov qword ptr [rdi], rax
    mov rax, r9
    xor edx, edx
    div rcx
    mov qword ptr [rdi+8], rax
    mov qword ptr [rdi+16], 0
    mov qword ptr [rdi+24], 0
2:  NOW
    xor edx, edx
    mov ecx, 10000000
    div rcx
    RESTORE
    jmp done

getrusage:
    cmp edi, 1
    ja slow
    CHK rsi, F_HI144, F_BL144
    SAVE
    cmp edi, 1
    jne 2f
    THREAD_NS
    mov rax, qword ptr [r11+48]
    jmp 3f
2:  SELF_NS
    xor eax, eax
3:  mov rsi, qword ptr [r11+80]
    mov qword ptr [rsi+128], rax
    mov rax, r8
    xor edx, edx
    mov ecx, 1000000000
    div rcx
    mov qword ptr [rsi], rax
    mov rax, rdx
    xor edx, edx
    mov ecx, 1000
    div rcx
    mov qword ptr [rsi+8], rax
    mov rax, r9
    xor edx, edx
    mov ecx, 1000000000
    div rcx
    mov qword ptr [rsi+16], rax
    mov rax, rdx
    xor edx, edx
    mov ecx, 1000
    div rcx
    mov qword ptr [rsi+24], rax
    mov rax, qword ptr [F_MAXRSS]
    mov qword ptr [rsi+32], rax
    xor eax, eax
    mov qword ptr [rsi+40], rax
    mov qword ptr [rsi+48], rax
    mov qword ptr [rsi+56], rax
    mov qword ptr [rsi+64], rax
    mov qword ptr [rsi+72], rax
    mov qword ptr [rsi+80], rax
    mov qword ptr [rsi+88], rax
    mov qword ptr [rsi+96], rax
    mov qword ptr [rsi+104], rax
    mov qword ptr [rsi+112], rax
    mov qword ptr [rsi+120], rax
    mov qword ptr [rsi+136], rax
    RESTORE
    xor eax, eax
    jmp done
