"""tvm_lite.ir"""
