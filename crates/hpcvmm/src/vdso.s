    .intel_syntax noprefix
    .set VVAR, 0x71000
    .set TSC_BASE, VVAR
    .set MULT, VVAR+8
    .set MONO, VVAR+16
    .set REAL, VVAR+24
    .set SEQ, VVAR+32
    .text
    .globl cg
# long clock_gettime(clockid_t edi, struct timespec *rsi)
cg:
    cmp edi, 1
    je 1f
    cmp edi, 4
    je 1f
    cmp edi, 6
    je 1f
    cmp edi, 7
    je 1f
    test edi, edi
    je 2f
    cmp edi, 5
    je 2f
    mov eax, 228
    syscall
    ret
1:  mov r10, qword ptr [MONO]
    jmp 3f
2:  mov r10, qword ptr [REAL]
3:  call now
    xor edx, edx
    mov ecx, 1000000000
    div rcx
    mov qword ptr [rsi], rax
    mov qword ptr [rsi+8], rdx
    xor eax, eax
    ret
# rax = r10 + ns since the TSC base; clobbers rdx
now:
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, qword ptr [TSC_BASE]
    mul qword ptr [MULT]
    shrd rax, rdx, 32
    add rax, r10
    ret
# int gettimeofday(struct timeval *rdi, struct timezone *rsi)
gtod:
    test rdi, rdi
    je 4f
    mov r10, qword ptr [REAL]
    call now
    xor edx, edx
    mov ecx, 1000000000
    div rcx
    mov qword ptr [rdi], rax
    mov rax, rdx
    xor edx, edx
    mov ecx, 1000
    div rcx
    mov qword ptr [rdi+8], rax
4:  test rsi, rsi
    je 5f
    mov qword ptr [rsi], 0
5:  xor eax, eax
    ret
# time_t time(time_t *rdi)
tm:
    mov r10, qword ptr [REAL]
    call now
    xor edx, edx
    mov ecx, 1000000000
    div rcx
    test rdi, rdi
    je 6f
    mov qword ptr [rdi], rax
6:  ret
