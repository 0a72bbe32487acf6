! build: -fopenmp
! Fortran guest: formatted file I/O round trip, allocatable arrays, an OpenMP reduction,
! command-line arguments and an intrinsic clock.
program ftest
  use omp_lib
  implicit none
  integer, parameter :: n = 2000000
  real(8), allocatable :: a(:)
  real(8) :: s, back
  integer :: i, u, nthreads, nargs
  integer(8) :: c0, c1, rate
  character(len=64) :: arg
  allocate(a(n))
  call system_clock(c0, rate)
  do i = 1, n
    a(i) = 1.0d0 / dble(i)
  end do
  s = 0.0d0
  nthreads = 0
  !$omp parallel reduction(+:s)
  !$omp single
  nthreads = omp_get_num_threads()
  !$omp end single
  !$omp do
  do i = 1, n
    s = s + a(i)
  end do
  !$omp end do
  !$omp end parallel
  call system_clock(c1)
  open(newunit=u, file='fortran-out.txt', status='replace', action='write')
  write(u, '(F20.12)') s
  close(u)
  open(newunit=u, file='fortran-out.txt', status='old', action='read')
  read(u, *) back
  close(u, status='delete')
  nargs = command_argument_count()
  arg = ''
  if (nargs > 0) call get_command_argument(1, arg)
  print '(A,F16.10,A,I0,A,A,A,L1)', 'sum=', back, ' threads=', nthreads, ' arg=', trim(arg), &
        ' clock_ok=', c1 >= c0
  deallocate(a)
end program ftest
