base:
  '*':
    - stub
