// Each bindings file registers its part of the module; module.cpp calls them all.
#pragma once
#include <pybind11/pybind11.h>

void register_kernels(pybind11::module_& m);
void register_engine(pybind11::module_& m);
void register_decoder(pybind11::module_& m);
